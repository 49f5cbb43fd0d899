"""One field of a document read or written in a format (formats/__init__.py lists them).

`read_field` and `write_field` are what the document API (wsserver/http/documents.py,
wsserver/http/content.py) and the webhooks call: a field is a root of the document,
its kind told from its content (documents/content.py). A write is made on a scratch
copy of the document; its caller applies the difference as one update like any other.
"""

import json
import math
import re
from typing import Any

from pycrdt import Doc, Map, Text, XmlFragment

from ...errors import BadRequest, MessageTooBig
from ..content import FRAGMENT, TEXT, UNKNOWN, field_json, roots
from . import markdown, markdown_read, prosemirror, text
from .values import MAX_SAFE

READ_FORMATS = ("prosemirror", "text", "markdown")
WRITE_FORMATS = ("prosemirror", "markdown", "text")
POSITIONS = ("end", "start")
# What a webhook's document.changed may carry (webhooks/content.py).
CONTENT_FORMATS = ("json", "prosemirror", "markdown", "text")
# The ProseMirror document Tiptap's Collaboration extension edits by default.
DEFAULT_FIELD = "default"

# A write into an XML field runs on the event loop, every other client of the process
# waiting: markdown-it parses 2 to 9 s a MB here, and each node written costs tens of
# µs. Past these, 413 (a book of 10,000 paragraphs is about 50,000 nodes).
MAX_MARKDOWN_BYTES = 256 * 1024
MAX_NODES = 50_000

_SURROGATE = re.compile("[\ud800-\udfff]")

_KIND_NAMES = {"text": "text", "fragment": "XML fragment", "array": "array", "map": "map"}


def read_field(update: bytes, field: str, form: str) -> Any:
    """Field `field` of the document `update` holds, in format `form` (READ_FORMATS):
    ProseMirror JSON (a dict), or text or Markdown (a string). An absent or empty
    field reads as empty; BadRequest for a field whose kind the format cannot show."""
    kind, root = roots(update, [field])[field]
    if form == "text" and kind == TEXT:
        return str(root)
    if form == "markdown" and kind == TEXT:
        return str(root)  # a text field edited as Markdown source is its own Markdown
    if form == "text" and kind == UNKNOWN:
        return ""
    _expect(kind, field, form, (FRAGMENT, UNKNOWN))
    doc = prosemirror.fragment_json(root if kind == FRAGMENT else None, read=True)  # type: ignore[arg-type]
    if form == "prosemirror":
        return doc
    if form == "markdown":
        return markdown.doc_markdown(doc)
    return text.doc_text(doc)


def field_contents(update: bytes, form: str) -> dict[str, Any]:
    """{field: content} of every field of the document `update` holds, in format `form`
    (CONTENT_FORMATS) where it applies (an XML field in any; a text field as text in
    markdown, prosemirror being for XML only), else as its JSON (maps, arrays, an
    empty field as null)."""
    contents = {}
    for name, (kind, root) in roots(update).items():
        if form in READ_FORMATS and kind == FRAGMENT:
            doc = prosemirror.fragment_json(root, read=True)  # type: ignore[arg-type]
            value: Any = doc
            if form == "markdown":
                value = markdown.doc_markdown(doc)
            elif form == "text":
                value = text.doc_text(doc)
        else:
            value = field_json(kind, root)
        contents[name] = value
    return contents


def parse_body(body: bytes, form: str) -> Any:
    """The request body of a write in format `form`, checked before anything is
    written: ProseMirror nodes (prosemirror) or a string (text, markdown: any text is
    Markdown)."""
    try:
        source = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    if form in ("text", "markdown"):
        return source
    return prosemirror.parse_doc(parse_json(source))


def parse_json(source: str | bytes) -> Any:
    """JSON, or BadRequest; NaN and Infinity are not JSON, nor is a number too large
    for a float64 or a lone surrogate (`"\\ud800"`: not text), which pycrdt cannot
    hold. An integer past 2**53 is read as JavaScript reads it, a float: pycrdt makes
    a larger one a BigInt that editors cannot serialize, and panics on one past 64
    bits, a panic that is no Exception and takes the whole process down."""

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(source, parse_constant=constant, parse_int=_number, parse_float=_float)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"the body is not JSON: {str(e)[:100]}") from None
    _check_strings(value)
    return value


def _number(digits: str) -> int | float:
    number = int(digits)  # ValueError past Python's 4,300 digits
    return number if abs(number) <= MAX_SAFE else _float(digits)


def _float(digits: str) -> float:
    number = float(digits)
    if not math.isfinite(number):
        raise ValueError(f"{digits[:20]} is too large for a number")
    return number


def _check_strings(value: Any) -> None:
    """BadRequest for a string (or key) holding a lone surrogate; iterative, as the
    JSON may be nested as deep as the parser allows."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise BadRequest("the body is not JSON text: it holds a lone surrogate (\\ud800)")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def write_field(
    doc: Doc, update: bytes, field: str, form: str, content: Any, position: str | None
) -> None:
    """Write `content` (from parse_body) into field `field` of scratch copy `doc`
    (which holds `update`): replace its content (`position` None) or insert at its
    start or end. Markdown into a text field is written as it is (the field is
    Markdown source, as `read_field` reads it). BadRequest, `doc` untouched, for a
    field of a kind the format cannot write."""
    kind, _ = roots(update, [field])[field]
    if (form == "text" and kind == UNKNOWN) or (form != "prosemirror" and kind == TEXT):
        root = doc.get(field, type=Text)
        if position is None:
            text.replace_text(root, content)
        else:
            root.insert(0 if position == "start" else len(root), content)
        return
    _expect(kind, field, form, (FRAGMENT, UNKNOWN))
    nodes = content
    if form == "text":
        _limit(content.count("\n"), MAX_NODES, "lines")
        nodes = text.paragraphs(content)
    elif form == "markdown":
        _limit(len(content.encode("utf-8")), MAX_MARKDOWN_BYTES, "bytes of Markdown")
        nodes = markdown_read.markdown_doc(content)["content"]
    _limit(_count(nodes), MAX_NODES, "nodes")
    fragment = doc.get(field, type=XmlFragment)
    if position is None:
        prosemirror.replace(fragment, nodes)
    else:
        prosemirror.insert(fragment, 0 if position == "start" else len(fragment.children), nodes)


def _limit(size: int, limit: int, what: str) -> None:
    if size > limit:
        raise MessageTooBig(f"a write into an XML field holds at most {limit:,} {what}")


def _count(nodes: list) -> int:
    """The nodes of checked ProseMirror `nodes`, at every level."""
    count, stack = 0, list(nodes)
    while stack:
        count += 1
        stack.extend(stack.pop().get("content", []))
    return count


def patch_map(doc: Doc, update: bytes, field: str, changes: Any) -> None:
    """Set the keys of map field `field` of scratch copy `doc` to the values of JSON
    object `changes` (a null deletes the key); BadRequest, nothing written, for
    anything but an object or a field that is not a map."""
    if not isinstance(changes, dict):
        raise BadRequest("the body must be a JSON object: {key: value or null}")
    kind, _ = roots(update, [field])[field]
    _expect(kind, field, "a map patch", ("map", UNKNOWN))
    root = doc.get(field, type=Map)
    for key, value in changes.items():
        if value is None:
            if key in root:
                del root[key]
        elif root.get(key) != value:
            root[key] = value


def _expect(kind: str, field: str, form: str, kinds: tuple[str, ...]) -> None:
    if kind not in kinds:
        raise BadRequest(f"field {field!r} is a {_KIND_NAMES[kind]}: {form} does not apply to it")
