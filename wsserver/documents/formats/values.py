"""A value held in a document as JSON: the rule every format shares for what is not
rich text (documents/content.py gives the whole table).

Nested types follow their kind (an XML type its escaped XML string form, a text its
string, a map an object, an array a list). Binary content becomes base64, a subdocument
its guid. Numbers that are whole come out as integers (Yjs stores JS numbers as float64
or varint; `1.0` and `1` are the same number to JSON); NaN and ±Infinity, which JSON
cannot hold, as null (JSON.stringify makes them null too). Types nested deeper than
MAX_DEPTH raise NestedTooDeep (422): any writer can nest maps a thousand deep, and the
recursion must not end in a RecursionError.
"""

import base64
import math

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from ...errors import NestedTooDeep
from .xml import MAX_DEPTH, to_xml

XML_TYPES = (XmlFragment, XmlElement, XmlText)
# Whole floats up to 2**53 are exact integers in JS too.
MAX_SAFE = 2**53


def plain(value: object, depth: int = 1) -> object:
    """`value` (a nested type or a plain value of a document) as JSON."""
    if depth > MAX_DEPTH:
        raise NestedTooDeep()
    if isinstance(value, XML_TYPES):
        return to_xml(value)
    if isinstance(value, Text):
        return str(value)
    if isinstance(value, (Map, dict)):
        return {str(k): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (Array, list, tuple)):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE:
        return int(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Doc):
        return str(value.guid)
    return value
