"""A document's root types as JSON: what `GET /v1/documents/NAME?format=json` answers
and what the admin console shows.

An update carries no type for a root: a client declares it (`getText('content')`), and a
document the server only ever applied updates to has untyped roots. So each root's kind
is told from its content, on scratch copies (casting a root fixes its type for good,
and the live copy must stay as clients made it):

    string content (Yjs ContentString)            text      -> a string
    an XML element or XML text among its items    fragment  -> its XML string form,
                                                               escaped (formats/xml.py)
    other sequence items                          array     -> a list
    keyed entries                                 map       -> an object
    nothing left (never used, or all deleted)     unknown   -> null

Nested values follow the same mapping (a nested type knows its kind): formats/values.py.
The other forms of a root (ProseMirror JSON, text, Markdown) are in formats/.
"""

from typing import Any

from pycrdt import Array, Doc, Map, Text, XmlFragment

from .formats.values import XML_TYPES, plain
from .formats.xml import to_xml

TEXT, FRAGMENT, ARRAY, MAP, UNKNOWN = "text", "fragment", "array", "map", "unknown"


def document_json(update: bytes) -> dict:
    """{root name: JSON value} of the document `update` (a Yjs v1 update) holds."""
    return {name: field_json(kind, root) for name, (kind, root) in sorted(roots(update).items())}


def roots(update: bytes, names: list[str] | None = None) -> dict[str, tuple[str, object]]:
    """{root name: (kind, the root cast to it)} of the document `update` holds (only
    `names` when given, absent ones as UNKNOWN); each root from a scratch copy of its
    own kind's (see the table above)."""
    present = _root_names(update)
    if names is None:
        names = present
    if not present:
        return {name: (UNKNOWN, None) for name in names}
    as_text, as_array, as_map, as_xml = (
        _cast_all(update, names, kind) for kind in (Text, Array, Map, XmlFragment)
    )
    result: dict[str, tuple[str, object]] = {}
    for name in names:
        text, array, mapping, fragment = as_text[name], as_array[name], as_map[name], as_xml[name]
        # A fragment lists only its XML children; an array would list every character of
        # a text, one Python object each (seconds for a long text, holding the process).
        if any(isinstance(child, XML_TYPES) for child in fragment.children):
            result[name] = (FRAGMENT, fragment)
        elif str(text):
            result[name] = (TEXT, text)
        elif len(array):
            result[name] = (ARRAY, array)
        elif len(mapping):
            result[name] = (MAP, mapping)
        else:
            result[name] = (UNKNOWN, None)
    return result


def field_json(kind: str, root: object) -> object:
    """The JSON of a root of `kind` (as `roots` gives them)."""
    if kind == FRAGMENT:
        return to_xml(root)  # type: ignore[arg-type]
    if kind == TEXT:
        return str(root)
    if kind == ARRAY:
        return [plain(item, 1) for item in root]  # type: ignore[attr-defined]
    if kind == MAP:
        return {key: plain(value, 1) for key, value in root.items()}  # type: ignore[attr-defined]
    return None


def _root_names(update: bytes) -> list[str]:
    doc: Doc = Doc()
    doc.apply_update(update)
    return list(doc.keys())


def _cast_all(update: bytes, names: list[str], kind: type) -> dict[str, Any]:
    doc: Doc = Doc()
    doc.apply_update(update)
    return {name: doc.get(name, type=kind) for name in names}
