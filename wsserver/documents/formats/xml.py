"""The XML string form of an XML root (Yjs XmlFragment, XmlElement, XmlText), escaped.

The form is the one Yrs prints (`str(fragment)`), tag for tag: an element with its
attributes sorted by name; a text's formatted runs wrapped in one tag per formatting
attribute (sorted by name, the first outermost), an object value's keys becoming that
tag's attributes (`<link href="…">`), so `<paragraph>Typed. <bold>Bold</bold></paragraph>`.
What Yrs leaves out is the escaping, and it is what makes the string safe to parse or
to put in a page: what a user typed can never pass for structure.

- Text: `&`, `<`, `>` as entities. Attribute values also `"` and tab, newline and
  carriage return as character references (a parser would turn them into spaces).
  A carriage return in text is `&#13;` too (a parser would turn it into a newline).
- Characters XML 1.0 cannot carry at all (control characters other than tab, newline
  and carriage return; U+FFFE, U+FFFF) become U+FFFD: the string stays well-formed XML.
- Names (a node's, a formatting attribute's, an attribute's) cannot be escaped: a
  character a name may not hold becomes `_` (and a name that may not start as it does
  gets a leading `_`), so a crafted node name cannot open a tag of its own either.
- Non-string attribute values: numbers (whole ones as integers), `true`/`false`, and
  objects or lists as compact JSON.

Parsing the string back (wrapped in one root element) gives the same tree: the
property test in tests/test_content_formats.py.
"""

import json
import re
from typing import Any

from pycrdt import XmlElement, XmlFragment, XmlText

from ...errors import NestedTooDeep

# Levels of elements (as formats/values.py: far below Python's recursion limit).
MAX_DEPTH = 100
# Characters XML 1.0 does not allow anywhere, even as character references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# A simplified XML Name: letters, digits and `_ - . :` (any Unicode letter or digit).
_NAME_CHAR = re.compile(r"[^\w\-.:]")
_NAME_START = re.compile(r"[^\W\d]|_|:")

_TEXT = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"}
_ATTRIBUTE = {**_TEXT, '"': "&quot;", "\t": "&#9;", "\n": "&#10;"}
_TEXT_RE = re.compile("[&<>\r]")
_ATTRIBUTE_RE = re.compile('[&<>"\t\n\r]')


def escape_text(text: str) -> str:
    text = _NOT_XML.sub("\ufffd", text)
    return _TEXT_RE.sub(lambda m: _TEXT[m.group()], text)


def escape_attribute(value: object) -> str:
    if not isinstance(value, str):
        value = attribute_string(value)
    value = _NOT_XML.sub("\ufffd", value)
    return _ATTRIBUTE_RE.sub(lambda m: _ATTRIBUTE[m.group()], value)


def attribute_string(value: object) -> str:
    """A non-string attribute value as text: numbers, true/false, JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(_whole(value), separators=(",", ":"), ensure_ascii=False)


def _whole(value: object) -> object:
    # Yjs keeps JS numbers as float64: a heading's level 2 arrives as 2.0.
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {str(k): _whole(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_whole(v) for v in value]
    return value


def xml_name(name: str) -> str:
    name = _NAME_CHAR.sub("_", name)
    if not name or not _NAME_START.match(name):
        name = "_" + name
    return name


def attributes_of(element: XmlElement) -> dict[str, Any]:
    """An element's attributes as a dict (pycrdt's view iterates (key, value) pairs)."""
    return dict(element.attributes)  # type: ignore[call-overload]


def to_xml(node: XmlFragment | XmlElement | XmlText) -> str:
    """The escaped XML string form of `node` (see the module's docstring);
    NestedTooDeep (422) past MAX_DEPTH levels of elements."""
    parts: list[str] = []
    _write(node, parts, 1)
    return "".join(parts)


def _write(node: XmlFragment | XmlElement | XmlText, parts: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:  # any client can nest elements a thousand deep
        raise NestedTooDeep()
    if isinstance(node, XmlText):
        for insert, attributes in node.diff():
            _write_run(insert, attributes or {}, parts)
        return
    if isinstance(node, XmlElement):
        tag = xml_name(str(node.tag))
        parts.append(f"<{tag}{_attributes(attributes_of(node))}>")
        for child in node.children:
            _write(child, parts, depth + 1)
        parts.append(f"</{tag}>")
        return
    for child in node.children:
        _write(child, parts, depth + 1)


def _write_run(insert: object, attributes: dict, parts: list[str]) -> None:
    marks = sorted((k, v) for k, v in attributes.items() if v is not None)
    for name, value in marks:
        own = _attributes(value) if isinstance(value, dict) else ""
        parts.append(f"<{xml_name(name)}{own}>")
    # An embed (not a string) is shown as its JSON, as text.
    parts.append(escape_text(insert if isinstance(insert, str) else attribute_string(insert)))
    for name, _ in reversed(marks):
        parts.append(f"</{xml_name(name)}>")


def _attributes(attributes: dict) -> str:
    return "".join(
        f' {xml_name(str(k))}="{escape_attribute(v)}"'
        for k, v in sorted(attributes.items())
        if v is not None
    )
