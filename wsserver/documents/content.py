"""A document's root types as JSON: what `GET /v1/documents/NAME?format=json` answers
and what the admin console shows.

An update carries no type for a root: a client declares it (`getText('content')`), and a
document the server only ever applied updates to has untyped roots. So each root's kind
is told from its content, on scratch copies (casting a root fixes its type for good,
and the live copy must stay as clients made it):

    string content (Yjs ContentString)            text      -> a string
    an XML element or XML text among its items    fragment  -> its XML string form
    other sequence items                          array     -> a list
    keyed entries                                 map       -> an object
    nothing left (never used, or all deleted)     unknown   -> null

Nested values follow the same mapping (a nested type knows its kind). Binary content
becomes base64, a subdocument its guid. Numbers that are whole come out as integers
(Yjs stores JS numbers as float64 or varint; `1.0` and `1` are the same number to JSON).
Types nested deeper than MAX_DEPTH raise NestedTooDeep (422): any writer can nest maps
a thousand deep, and the recursion must not end in a RecursionError.
"""

import base64
import math

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from ..errors import NestedTooDeep

_XML = (XmlFragment, XmlElement, XmlText)
# Whole floats up to 2**53 are exact integers in JS too.
_MAX_SAFE = 2**53
# Nesting levels of a root's JSON (far below Python's recursion limit).
MAX_DEPTH = 100


def document_json(update):
    """{root name: JSON value} of the document `update` (a Yjs v1 update) holds."""
    names = _root_names(update)
    if not names:
        return {}
    as_text, as_array, as_map, as_xml = (
        _cast_all(update, names, kind) for kind in (Text, Array, Map, XmlFragment)
    )
    result = {}
    for name in sorted(names):
        text, array, mapping, fragment = as_text[name], as_array[name], as_map[name], as_xml[name]
        # A fragment lists only its XML children; an array would list every character of
        # a text, one Python object each (seconds for a long text, holding the process).
        if any(isinstance(child, _XML) for child in fragment.children):
            result[name] = str(fragment)
        elif str(text):
            result[name] = str(text)
        elif len(array):
            result[name] = [_value(item, 1) for item in array]
        elif len(mapping):
            result[name] = {key: _value(value, 1) for key, value in mapping.items()}
        else:
            result[name] = None
    return result


def _root_names(update):
    doc = Doc()
    doc.apply_update(update)
    return list(doc.keys())


def _cast_all(update, names, kind):
    doc = Doc()
    doc.apply_update(update)
    return {name: doc.get(name, type=kind) for name in names}


def _value(value, depth):
    if depth > MAX_DEPTH:
        raise NestedTooDeep()
    if isinstance(value, _XML):
        return str(value)
    if isinstance(value, Text):
        return str(value)
    if isinstance(value, (Map, dict)):
        return {str(k): _value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (Array, list, tuple)):
        return [_value(v, depth + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and ±Infinity have no JSON; JSON.stringify makes them null too
    if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX_SAFE:
        return int(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Doc):
        return str(value.guid)
    return value
