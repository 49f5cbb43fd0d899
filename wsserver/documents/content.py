"""A document's root types as JSON, for people reading it (the admin console).

An update carries no type for a root (a client declares it: `getText('content')`), so
each root's kind is told from its content, on scratch copies: casting a root fixes its
type for good, and the live copy must stay as clients made it.

    string content            text      -> a string
    XML elements or XML text  fragment  -> its XML string form
    other sequence items      array     -> a list
    keyed entries             map       -> an object
    nothing                             -> null
"""

import base64

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

_XML = (XmlFragment, XmlElement, XmlText)


def document_json(update):
    """{root name: JSON value} of the document `update` (a Yjs v1 update) holds."""
    names = list(_copy(update).keys())
    result = {}
    for name in sorted(names):
        text = str(_copy(update).get(name, type=Text))
        items = list(_copy(update).get(name, type=Array))
        if text and not any(isinstance(i, _XML) for i in items):
            result[name] = text
        elif any(isinstance(i, _XML) for i in items):
            result[name] = str(_copy(update).get(name, type=XmlFragment))
        elif items:
            result[name] = [_value(i) for i in items]
        else:
            mapping = _copy(update).get(name, type=Map)
            result[name] = {k: _value(v) for k, v in mapping.items()} if len(mapping) else None
    return result


def _copy(update):
    doc = Doc()
    doc.apply_update(update)
    return doc


def _value(value):
    """A nested value as JSON: shared types by their kind, bytes as base64, whole
    floats (Yjs numbers are float64) as integers."""
    if isinstance(value, _XML):
        return str(value)
    if isinstance(value, Text):
        return str(value)
    if isinstance(value, Array):
        return [_value(v) for v in value]
    if isinstance(value, Map):
        return {k: _value(v) for k, v in value.items()}
    if isinstance(value, Doc):
        return str(value.guid)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    if isinstance(value, dict):
        return {k: _value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_value(v) for v in value]
    return value
