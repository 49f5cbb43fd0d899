"""ProseMirror JSON of Markdown (the reading half of formats/markdown.py, whose docstring
gives the mapping): CommonMark read by markdown-it-py, the house's Markdown parser, with
strikethrough; raw HTML is text, never markup. A soft line break is a space; an image
(StarterKit has no image node) is its alt text linked to its source; a bullet list whose
every item starts with `[ ]` or `[x]` is a task list. The writer reads its own output back
with `parser()` and `inline_nodes` to check that the marks it wrote will read back.
markdown-it-py is imported by the first `parser()` call, not with this module: a server
whose clients never ask for Markdown does not load it (about 15 ms at start).
"""

import re
from functools import cache
from typing import TYPE_CHECKING, Any

from .prosemirror import MARK_ORDER
from .text import HARD_BREAK

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

Node = dict[str, Any]

_TASK = re.compile(r"^\[([ xX])\]( |$)")
_RANK = {name: i for i, name in enumerate(MARK_ORDER)}


@cache
def parser() -> "MarkdownIt":
    """The process's one Markdown parser, made on first use."""
    from markdown_it import MarkdownIt

    made = MarkdownIt("commonmark", {"html": False}).enable("strikethrough")
    # A link's href as written (markdown-it would percent-encode it, and a round trip would
    # change it); validateLink still turns javascript: and the like into text.
    made.normalizeLink = lambda url: url  # type: ignore[method-assign]
    return made


_BLOCKS = {
    "paragraph": "paragraph",
    "heading": "heading",
    "blockquote": "blockquote",
    "bullet_list": "bulletList",
    "ordered_list": "orderedList",
    "list_item": "listItem",
}
_INLINE_MARKS = {"strong": "bold", "em": "italic", "s": "strike"}


def markdown_doc(source: str) -> Node:
    """ProseMirror JSON of Markdown `source` (see the module's docstring)."""
    doc: Node = {"type": "doc", "content": []}
    stack = [doc]
    for token in parser().parse(source):
        kind = token.type
        if kind.endswith("_open") and kind[: -len("_open")] in _BLOCKS:
            node: Node = {"type": _BLOCKS[kind[: -len("_open")]]}
            if kind == "heading_open":
                node["attrs"] = {"level": int(token.tag[1:])}
            elif kind == "ordered_list_open":
                node["attrs"] = {"start": int(token.attrGet("start") or 1)}
            stack.append(node)
        elif kind.endswith("_close") and kind[: -len("_close")] in _BLOCKS:
            node = stack.pop()
            if node["type"] in ("bulletList", "orderedList"):
                _maybe_task_list(node)
            _append(stack[-1], node)
        elif kind in ("fence", "code_block"):
            code: Node = {"type": "codeBlock"}
            language = token.info.strip().split(" ")[0] if kind == "fence" else ""
            if language:
                code["attrs"] = {"language": language}
            text = token.content[:-1] if token.content.endswith("\n") else token.content
            if text:
                code["content"] = [{"type": "text", "text": text}]
            _append(stack[-1], code)
        elif kind == "hr":
            _append(stack[-1], {"type": "horizontalRule"})
        elif kind == "inline":
            for child in inline_nodes(token.children or []):
                _append(stack[-1], child)
            first_in_item = stack[-2]["type"] == "listItem" and "content" not in stack[-2]
            if first_in_item and _TASK.match(token.content):
                stack[-1]["_task"] = token.content[1] in "xX"
    return doc


def _append(parent: Node, node: Node) -> None:
    parent.setdefault("content", []).append(node)


def _maybe_task_list(node: Node) -> None:
    """A bullet list whose every item starts with [ ] or [x] becomes a task list (the
    marks `_task` left on first paragraphs are taken off every list)."""
    items = node.get("content", [])
    firsts = [(item.get("content") or [{}])[0] for item in items]
    tasks = [first.pop("_task", None) for first in firsts]
    if node["type"] != "bulletList" or not items or any(task is None for task in tasks):
        return
    node["type"] = "taskList"
    for item, first, checked in zip(items, firsts, tasks, strict=True):
        item["type"] = "taskItem"
        item["attrs"] = {"checked": checked}
        text = first["content"][0]
        text["text"] = text["text"][4:] if len(text["text"]) > 3 else ""
        if not text["text"]:
            first["content"].pop(0)
        if not first["content"]:
            del first["content"]


def inline_nodes(tokens: list) -> list[Node]:
    """ProseMirror inline nodes (text with marks, hard breaks) of markdown-it inline tokens."""
    nodes: list[Node] = []
    marks: list[Node] = []

    def text(value: str, extra: list[Node] = ()) -> None:  # type: ignore[assignment]
        if not value:
            return
        own = sorted([*marks, *extra], key=lambda m: _RANK.get(m["type"], len(_RANK)))
        last = nodes[-1] if nodes else None
        if last is not None and last["type"] == "text" and last.get("marks", []) == own:
            last["text"] += value
            return
        node: Node = {"type": "text", "text": value}
        if own:
            node["marks"] = own
        nodes.append(node)

    for token in tokens:
        kind = token.type
        if kind in ("text", "text_special", "html_inline"):
            text(token.content)
        elif kind == "softbreak":
            text(" ")
        elif kind == "hardbreak":
            nodes.append({"type": HARD_BREAK})
        elif kind == "code_inline":
            text(token.content, [{"type": "code"}])
        elif kind.endswith("_open") and kind[: -len("_open")] in _INLINE_MARKS:
            marks.append({"type": _INLINE_MARKS[kind[: -len("_open")]]})
        elif kind.endswith("_close") and kind[: -len("_close")] in _INLINE_MARKS:
            name = _INLINE_MARKS[kind[: -len("_close")]]
            marks[:] = marks[: max(i for i, m in enumerate(marks) if m["type"] == name)]
        elif kind == "link_open":
            attrs = {"href": token.attrGet("href") or ""}
            if token.attrGet("title"):
                attrs["title"] = token.attrGet("title")
            marks.append({"type": "link", "attrs": attrs})
        elif kind == "link_close":
            marks[:] = marks[: max(i for i, m in enumerate(marks) if m["type"] == "link")]
        elif kind == "image":
            alt = token.content or str(token.attrGet("src") or "")
            text(alt, [{"type": "link", "attrs": {"href": token.attrGet("src") or ""}}])
    return nodes
