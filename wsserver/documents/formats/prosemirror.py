"""An XML root as ProseMirror JSON, and ProseMirror JSON written into one.

The mapping is y-prosemirror's (Tiptap's Collaboration extension uses it; its
`yXmlFragmentToProsemirrorJSON` is the reference):

    XmlElement(name, attributes)       {"type": name, "attrs": {...}, "content": [...]}
    XmlText runs (delta)               {"type": "text", "text": ..., "marks": [...]}
    a formatting attribute k: v        a mark {"type": k, "attrs": v}; a key `k--HASH`
                                       (y-prosemirror's overlapping marks) is mark `k`

Read (`fragment_json`): empty `attrs` objects and attributes whose value is null are
left out (so the result equals Tiptap's `editor.getJSON()` once the nulls are left out
of that too), numbers that are whole come out as integers, and marks are ordered as
Tiptap's StarterKit schema orders them (MARK_ORDER; other marks after them by name):
Yrs keeps formatting attributes in no fixed order.

Write (`parse_doc`, `replace`, `insert`): a `{"type": "doc", "content": [...]}` is
checked whole first (BadRequest naming the first wrong place, nothing written), then
applied as y-prosemirror's `updateYFragment` would: `replace` keeps every child that
did not change (and, for a changed one of the same type, its unchanged children and
text), so what changed is the only thing clients see deleted and inserted, and their
cursors elsewhere stay where they were. Attributes whose value is null are not
written (y-prosemirror skips them too), nor are marks on nodes other than text (a
hard break in bold text: y-prosemirror keeps marks on text only).
"""

from typing import Any

from pycrdt import Doc, XmlElement, XmlFragment, XmlText

from ...errors import BadRequest, NestedTooDeep
from .pacing import paced
from .values import MAX_DEPTH, plain
from .xml import attributes_of

# Tiptap 3's StarterKit (with its Link, priority 1000 so first) orders marks so.
MARK_ORDER = ("link", "bold", "code", "italic", "strike", "underline")
_RANK = {name: i for i, name in enumerate(MARK_ORDER)}
# Text runs written in order into one text up to this many (see _write_runs).
MANY_RUNS = 100

Node = dict[str, Any]
XmlParent = XmlFragment | XmlElement


def mark_name(attribute: str) -> str:
    """y-prosemirror's `yattr2markname`: `comment--AbCd1234` is a `comment` mark."""
    name, sep, digest = attribute.rpartition("--")
    if sep and name and len(digest) == 8 and all(c.isalnum() or c in "+/=" for c in digest):
        return name
    return attribute


def _mark_key(mark: Node) -> tuple[int, str]:
    return (_RANK.get(mark["type"], len(MARK_ORDER)), mark["type"])


# --- read ---------------------------------------------------------------------------


def fragment_json(fragment: XmlParent | None, read: bool = False) -> Node:
    """The ProseMirror JSON of an XML root (None: an empty or absent one); `read`: a
    read of a private copy, which yields to other greenlets as it goes (pacing.py)."""
    content = _children_json(fragment, 1, read) if fragment is not None else []
    return {"type": "doc", "content": content}


def _children_json(parent: XmlParent, depth: int, read: bool = False) -> list[Node]:
    result: list[Node] = []
    for child in paced(parent.children) if read else parent.children:
        if isinstance(child, XmlText):
            result.extend(text_nodes(child))
        elif isinstance(child, XmlElement):
            result.append(_element_json(child, depth + 1))
    return result


def _element_json(element: XmlElement, depth: int) -> Node:
    if depth > MAX_DEPTH:  # any client can nest elements a thousand deep
        raise NestedTooDeep()
    node: Node = {"type": str(element.tag)}
    attrs = _attrs(attributes_of(element), depth)
    if attrs:
        node["attrs"] = attrs
    content = _children_json(element, depth)
    if content:
        node["content"] = content
    return node


def text_nodes(text: XmlText) -> list[Node]:
    """The text nodes of one XmlText: a node per formatted run (embeds left out)."""
    nodes = []
    for insert, attributes in text.diff():
        if not isinstance(insert, str) or not insert:
            continue
        node: Node = {"type": "text", "text": insert}
        marks = []
        for key, value in (attributes or {}).items():
            if value is None:
                continue
            mark: Node = {"type": mark_name(key)}
            attrs = _attrs(value, 2) if isinstance(value, dict) else None
            if attrs:
                mark["attrs"] = attrs
            marks.append(mark)
        if marks:
            node["marks"] = sorted(marks, key=_mark_key)
        nodes.append(node)
    return nodes


def _attrs(attributes: dict, depth: int) -> dict:
    return {str(k): plain(v, depth) for k, v in attributes.items() if v is not None}


# --- check --------------------------------------------------------------------------


def parse_doc(value: object) -> list[Node]:
    """The content of a ProseMirror document `value` (parsed JSON), checked whole;
    BadRequest naming the first place that is not ProseMirror JSON."""
    if not isinstance(value, dict) or value.get("type") != "doc":
        raise BadRequest('not a ProseMirror document: expected {"type": "doc", "content": [...]}')
    content = value.get("content", [])
    if not isinstance(content, list):
        raise BadRequest("not a ProseMirror document: content must be a list of nodes")
    for i, node in enumerate(content):
        _check_node(node, f"content[{i}]", 1)
        if node["type"] == "text":
            raise BadRequest(f"not a ProseMirror document: content[{i}]: a doc holds blocks")
    return content


def _check_node(node: object, path: str, depth: int) -> None:
    def bad(why: str) -> BadRequest:
        return BadRequest(f"not a ProseMirror document: {path}: {why}")

    if depth > MAX_DEPTH:
        raise bad(f"nested deeper than {MAX_DEPTH}")
    if not isinstance(node, dict):
        raise bad("a node must be an object")
    kind = node.get("type")
    if not isinstance(kind, str) or not kind:
        raise bad("a node needs a type (a non-empty string)")
    if kind == "doc":
        raise bad("a doc cannot be nested")
    if not isinstance(node.get("attrs", {}), dict):
        raise bad("attrs must be an object")
    # Marks of other inline nodes (a hard break in bold text) are checked, and not
    # written: y-prosemirror keeps marks on text only.
    marks = node.get("marks", [])
    if not isinstance(marks, list):
        raise bad("marks must be a list")
    for j, mark in enumerate(marks):
        if not isinstance(mark, dict) or not isinstance(mark.get("type"), str) or not mark["type"]:
            raise bad(f"marks[{j}] needs a type (a non-empty string)")
        if not isinstance(mark.get("attrs", {}), dict):
            raise bad(f"marks[{j}].attrs must be an object")
    if kind == "text":
        if not isinstance(node.get("text"), str) or not node["text"]:
            raise bad("a text node needs a non-empty text")
        if "content" in node:
            raise bad("a text node has no content")
        return
    content = node.get("content", [])
    if not isinstance(content, list):
        raise bad("content must be a list of nodes")
    for i, child in enumerate(content):
        _check_node(child, f"{path}.content[{i}]", depth + 1)


# --- write --------------------------------------------------------------------------


def normalized(nodes: list[Node]) -> list[Node]:
    """`nodes` as they read back once written (nulls and empty attrs left out, text
    runs merged, marks ordered): what `replace` compares with what is there."""
    scratch: Doc = Doc()
    fragment = scratch.get("scratch", type=XmlFragment)
    insert(fragment, 0, nodes)
    return fragment_json(fragment)["content"]


def insert(parent: XmlParent, index: int, nodes: list[Node]) -> None:
    """Insert `nodes` (checked) as children of `parent` from child `index` on.

    Last first, each at `index`: Yrs finds an index by walking from the first child,
    so inserting each after the one before made a write quadratic (10,000 paragraphs
    took seconds, all of them on the event loop)."""
    for item in reversed(_groups(nodes)):
        if isinstance(item, list):
            text = parent.children.insert(index, XmlText())
            _write_runs(text, 0, item, set())
        else:
            attrs = {k: v for k, v in (item.get("attrs") or {}).items() if v is not None}
            element = parent.children.insert(index, XmlElement(item["type"], attrs))
            insert(element, 0, item.get("content", []))


def _groups(nodes: list[Node]) -> list[Node | list[Node]]:
    """Nodes with each run of consecutive text nodes as one list (one XmlText)."""
    groups: list[Node | list[Node]] = []
    for node in nodes:
        if node["type"] == "text":
            if groups and isinstance(groups[-1], list):
                groups[-1].append(node)
            else:
                groups.append([node])
        else:
            groups.append(node)
    return groups


def _formatting(node: Node) -> dict:
    return {
        m["type"]: {k: v for k, v in (m.get("attrs") or {}).items()} for m in node.get("marks", [])
    }


def _write_runs(text: XmlText, offset: int, nodes: list[Node], others: set[str]) -> None:
    """Insert text nodes at byte `offset` (pycrdt counts UTF-8 bytes); every mark name
    in `others` that a node lacks is written as null, so no run inherits a neighbour's
    formatting. In order, each after the one before, up to MANY_RUNS: Yrs walks from
    the text's start to an offset, and a paragraph of 20,000 marked runs took minutes.
    Past that, last first, each at `offset`: linear, but each mark boundary then
    costs two formatting items instead of one (a fifth more bytes for a paragraph of
    a few marks, so not below MANY_RUNS)."""
    names = others | {m["type"] for node in nodes for m in node.get("marks", [])}
    backwards = len(nodes) > MANY_RUNS
    for node in reversed(nodes) if backwards else nodes:
        attributes = _formatting(node)
        attributes.update({name: None for name in names - attributes.keys()})
        text.insert(offset, node["text"], attributes or None)
        if not backwards:
            offset += len(node["text"].encode("utf-8"))


def replace(parent: XmlParent, nodes: list[Node]) -> None:
    """Make `parent`'s children `nodes` (checked), touching only what differs."""
    _reconcile(parent, normalized(nodes))


def _reconcile(parent: XmlParent, new: list[Node]) -> None:
    old_children = list(parent.children)
    old = [_child_json(child) for child in old_children]
    target = _groups(new)
    prefix = 0
    while prefix < min(len(old), len(target)) and old[prefix] == target[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < min(len(old), len(target)) - prefix
        and old[len(old) - 1 - suffix] == target[len(target) - 1 - suffix]
    ):
        suffix += 1
    old_middle = old_children[prefix : len(old) - suffix]
    new_middle = target[prefix : len(target) - suffix]
    if len(old_middle) == len(new_middle) and all(
        _same_kind(o, n) for o, n in zip(old_middle, new_middle, strict=True)
    ):
        for child, item in zip(old_middle, new_middle, strict=True):
            if isinstance(child, XmlText):
                _reconcile_text(child, item)  # type: ignore[arg-type]
            else:
                _update_element(child, item)  # type: ignore[arg-type]
        return
    if old_middle:
        del parent.children[prefix : prefix + len(old_middle)]
    flat: list[Node] = []
    for item in new_middle:
        flat.extend(item if isinstance(item, list) else [item])
    insert(parent, prefix, flat)


def _child_json(child: object) -> Node | list[Node] | None:
    if isinstance(child, XmlText):
        return text_nodes(child)
    if isinstance(child, XmlElement):
        return _element_json(child, 2)
    return None


def _same_kind(child: object, item: Node | list[Node]) -> bool:
    if isinstance(item, list):
        return isinstance(child, XmlText)
    return isinstance(child, XmlElement) and str(child.tag) == item["type"]


def _update_element(element: XmlElement, node: Node) -> None:
    attrs = node.get("attrs", {})
    current = attributes_of(element)
    for key in current.keys() - attrs.keys():
        del element.attributes[key]
    for key, value in attrs.items():
        if plain(current.get(key), 2) != value:
            element.attributes[key] = value
    _reconcile(element, node.get("content", []))


def _reconcile_text(text: XmlText, nodes: list[Node]) -> None:
    """Rewrite only the middle of `text` that differs (characters or their marks)."""
    old = text_nodes(text)
    old_chars = _chars(old)
    new_chars = _chars(nodes)
    prefix = 0
    limit = min(len(old_chars), len(new_chars))
    while prefix < limit and old_chars[prefix] == new_chars[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < limit - prefix and old_chars[len(old_chars) - 1 - suffix] == new_chars[-1 - suffix]
    ):
        suffix += 1
    start = sum(len(c.encode("utf-8")) for c, _ in old_chars[:prefix])
    removed = sum(len(c.encode("utf-8")) for c, _ in old_chars[prefix : len(old_chars) - suffix])
    if removed:
        del text[start : start + removed]
    middle = new_chars[prefix : len(new_chars) - suffix]
    runs: list[Node] = []
    for char, marks in middle:
        if runs and runs[-1]["marks"] == marks:
            runs[-1]["text"] += char
        else:
            runs.append({"type": "text", "text": char, "marks": marks})
    names = {m["type"] for node in old for m in node.get("marks", [])}
    _write_runs(text, start, runs, names)


def _chars(nodes: list[Node]) -> list[tuple[str, list]]:
    """(character, its marks) of each character of normalized text nodes."""
    return [(c, node.get("marks", [])) for node in nodes for c in node["text"]]
