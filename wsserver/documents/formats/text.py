"""Plain text of a root, and text written into one.

Read: a text root is its string (formatting left out); an XML root (ProseMirror JSON,
formats/prosemirror.py) is its blocks' text, one line per textblock (an element that
holds text), in document order: list items, quotes and table cells each on their own
lines; a `hardBreak` inside a textblock is a newline; other inline nodes are their text.

Write: into a text root, `replace_text` rewrites only the middle that differs (so a
CodeMirror user's cursor before or after the change stays put); into an XML root, each
line becomes a paragraph (`paragraphs`).
"""

from typing import Any

from pycrdt import Text

from .pacing import paced

Node = dict[str, Any]

HARD_BREAK = "hardBreak"


def doc_text(doc: Node) -> str:
    """The plain text of ProseMirror JSON `doc`: one line per textblock."""
    lines: list[str] = []
    for node in paced(doc.get("content", [])):
        _block_lines(node, lines)
    return "\n".join(lines)


def _block_lines(node: Node, lines: list[str]) -> None:
    content = node.get("content", [])
    if node["type"] == "text":
        lines.append(node["text"])
    elif any(child["type"] == "text" for child in content) or not content:
        lines.append(inline_text(content))
    else:
        for child in content:
            _block_lines(child, lines)


def inline_text(nodes: list[Node]) -> str:
    """The text of a textblock's children: hard breaks as newlines."""
    parts = []
    for node in nodes:
        if node["type"] == "text":
            parts.append(node["text"])
        elif node["type"] == HARD_BREAK:
            parts.append("\n")
        else:
            parts.append(inline_text(node.get("content", [])))
    return "".join(parts)


def paragraphs(text: str) -> list[Node]:
    """ProseMirror paragraphs of `text`, one per line (an empty line an empty one)."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":  # a final newline ends the last line, it opens no new one
        lines.pop()
    return [
        {"type": "paragraph", "content": [{"type": "text", "text": line}]}
        if line
        else {"type": "paragraph"}
        for line in lines
    ]


def replace_text(text: Text, new: str) -> None:
    """Make `text` hold `new`, deleting and inserting only the middle that differs
    (offsets in UTF-8 bytes, as pycrdt counts)."""
    old = str(text)
    limit = min(len(old), len(new))
    prefix = 0
    while prefix < limit and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    start = len(old[:prefix].encode("utf-8"))
    removed = len(old[prefix : len(old) - suffix].encode("utf-8"))
    if removed:
        del text[start : start + removed]
    middle = new[prefix : len(new) - suffix]
    if middle:
        text.insert(start, middle)
