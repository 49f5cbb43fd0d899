"""A document's fields in the forms a backend without a Yjs library uses.

xml.py          the escaped XML string form (what ?format=json shows of an XML root)
values.py       any other value as JSON
prosemirror.py  an XML root as ProseMirror JSON, and ProseMirror JSON written into one
text.py         plain text of a text or XML root, and text written into one
markdown.py     Markdown of ProseMirror JSON, and ProseMirror JSON of Markdown
fields.py       one field of a document read or written in one of these formats
pacing.py       a read of a large document yields to the process's other clients
"""
