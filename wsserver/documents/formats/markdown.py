"""Markdown of ProseMirror JSON (formats/prosemirror.py), and ProseMirror JSON of Markdown.

The node and mark types of Tiptap's StarterKit and Link, both ways:

    heading {level}        # Title                paragraph        text
    bulletList/listItem    - item                 orderedList      3. item ({start})
    taskList/taskItem      - [ ] / - [x] item     blockquote       > quoted
    codeBlock {language}   ```lang fenced ```     horizontalRule   ---
    hardBreak              backslash newline      bold **b**, italic *i*, strike ~~s~~,
                                                  code `c`, link [t](href "title")

Write: other node types come out as their text (blocks as paragraphs), other marks
(underline, …) as nothing around their text; empty paragraphs are left out (Markdown
has none). Text that looks like Markdown syntax is escaped with backslashes (`*`, `_`,
`` ` ``, `[`, `]`, `~`, `<`, `\\`, an entity's `&`; at a line's start `#`, `>`, `-`, `+`,
`=`, and a number's `.` or `)`), so it reads back as the same text.

Read (formats/markdown_read.py): CommonMark (markdown-it-py) with strikethrough; raw
HTML is text. Markdown → PUT → GET markdown is stable after one round (the first may
normalise: `_i_` to `*i*`, `+` lists to `-`, …).
"""

import re
from collections.abc import Iterable
from typing import Any

from .markdown_read import inline_nodes, parser
from .pacing import paced
from .prosemirror import MARK_ORDER
from .text import HARD_BREAK, inline_text

Node = dict[str, Any]

_DELIMITERS = {"bold": "**", "italic": "*", "strike": "~~"}
_KEPT = ("bold", "italic", "strike", "code", "link")
_ESCAPE = re.compile(r"([\\`*_\[\]~<]|&(?=#?\w+;))")
_LINE_START = re.compile(r"^(\s*)([#>+=-]|\d+(?=[.)]))")
_RANK = {name: i for i, name in enumerate(MARK_ORDER)}
_INFO_END = re.compile(r"[\s`]")
_MAX_START = 999_999_999
_CLOSING = re.compile(r"(^|[ \t])(#+)$")


# --- ProseMirror JSON -> Markdown ---------------------------------------------------


def doc_markdown(doc: Node) -> str:
    """The Markdown of ProseMirror JSON `doc` (ends with a newline unless empty)."""
    text = _blocks(paced(doc.get("content", [])))
    return text + "\n" if text else ""


def _blocks(nodes: Iterable[Node], separator: str = "\n\n") -> str:
    return separator.join(b for b in (_block(node) for node in nodes) if b)


def _block(node: Node) -> str:
    kind = node["type"]
    content = node.get("content", [])
    attrs = node.get("attrs", {})
    if kind == "paragraph":
        return _textblock(content)
    if kind == "heading":
        level = attrs.get("level", 1)
        level = min(max(level, 1), 6) if isinstance(level, int) else 1
        # A run of # after a space at its end would be the optional closing sequence.
        return "#" * level + " " + _CLOSING.sub(r"\1\\\2", _textblock(_one_line(content)))
    if kind == "blockquote":
        return "\n".join("> " + line if line else ">" for line in _blocks(content).split("\n"))
    if kind in ("bulletList", "taskList"):
        return "\n".join(_item(item, "- ") for item in content)
    if kind == "orderedList":
        start = attrs.get("start", 1)
        # CommonMark's list numbers have at most nine digits.
        fits = isinstance(start, int) and 0 <= start <= _MAX_START - len(content)
        start = start if fits else 1
        return "\n".join(_item(item, f"{start + i}. ") for i, item in enumerate(content))
    if kind == "codeBlock":
        return _fenced(inline_text(content), attrs.get("language"))
    if kind == "horizontalRule":
        return "---"
    if kind == "text":
        return _escape(node["text"], True)
    if any(child["type"] == "text" for child in content):
        return _textblock(content)
    return _blocks(content)


def _item(item: Node, marker: str) -> str:
    if item["type"] == "taskItem":
        marker += "[x] " if item.get("attrs", {}).get("checked") else "[ ] "
    # A list right under the item's paragraph stays tight (no blank line before it).
    blocks = [(node["type"], _block(node)) for node in item.get("content", [])]
    body = ""
    for kind, text in (b for b in blocks if b[1]):
        body += ("\n" if kind.endswith("List") else "\n\n") + text if body else text
    indent = " " * (len(marker) if not marker.endswith("] ") else 2)
    lines = body.split("\n")
    rest = [indent + line if line else "" for line in lines[1:]]
    return "\n".join([marker + lines[0], *rest]) if body else marker.rstrip()


def _fenced(code: str, language: object) -> str:
    longest = max((len(run) for run in re.findall("`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    # An info string ends at whitespace and holds no backtick (else the fence is no
    # fence, and the code is read as Markdown): the language up to either.
    info = _INFO_END.split(language, maxsplit=1)[0] if isinstance(language, str) else ""
    return f"{fence}{info}\n{code}\n{fence}" if code else f"{fence}{info}\n{fence}"


def _escape(text: str, line_start: bool) -> str:
    text = _ESCAPE.sub(r"\\\1", text)
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if i or line_start:
            lines[i] = _LINE_START.sub(_escape_start, line)
    return "\n".join(lines)


def _escape_start(match: re.Match) -> str:
    space, token = match.groups()
    if token.isdigit():  # "1." would start a list: escape what follows the number
        return space + token + "\\"
    return space + "\\" + token


def _code_span(text: str) -> str:
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    ticks = "`" * (longest + 1)
    # CommonMark takes one space off each end of a span that has one at both ends and
    # is not all spaces, and a backtick at an end would join the fence.
    spaced = text.startswith(" ") and text.endswith(" ") and text.strip(" ")
    pad = " " if spaced or text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _marks(node: Node) -> list[Node]:
    """The marks Markdown writes around a node, outermost first (code is the node's
    own form, not a delimiter)."""
    marks = [m for m in node.get("marks", []) if m["type"] in _DELIMITERS or m["type"] == "link"]
    return sorted(marks, key=lambda m: _RANK.get(m["type"], len(_RANK)))


def _open(mark: Node) -> str:
    return "[" if mark["type"] == "link" else _DELIMITERS[mark["type"]]


def _close(mark: Node) -> str:
    if mark["type"] != "link":
        return _DELIMITERS[mark["type"]]
    attrs = mark.get("attrs", {})
    href = str(attrs.get("href") or "")
    if re.search(r"[\s()<>]", href) or not href:
        href = "<" + href.replace("<", "%3C").replace(">", "%3E") + ">"
    title = attrs.get("title")
    if isinstance(title, str) and title:
        href += ' "' + title.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"]({href})"


def _textblock(nodes: list[Node]) -> str:
    """A textblock's inline Markdown, checked by reading it back: CommonMark's flanking
    rules do not let every mark begin or end anywhere (`a**~~b~~**` is no bold), and a
    mark that would not read back would make the next round's Markdown differ. Then the
    block is written without bold, italic and strike (text, code and links stay), which
    reads back as written."""
    nodes = [_safe(node) for node in nodes]
    markdown = _inline(nodes)
    if all(n["type"] in ("text", HARD_BREAK) for n in nodes):
        read = inline_nodes(parser().parseInline(markdown)[0].children or [])
        if _signature(read) != _signature(nodes):
            plain = [
                {**n, "marks": [m for m in n.get("marks", []) if m["type"] not in _DELIMITERS]}
                for n in nodes
            ]
            markdown = _inline(plain)
    return markdown


def _one_line(nodes: list[Node]) -> list[Node]:
    """A heading's inline nodes on one line (a heading cannot break): a hard break or a
    newline in its text is a space."""
    return [
        {"type": "text", "text": " "}
        if node["type"] == HARD_BREAK
        else {**node, "text": node["text"].replace("\n", " ")}
        if node["type"] == "text"
        else node
        for node in nodes
    ]


def _safe(node: Node) -> Node:
    """`node` without a link whose href markdown-it would not read as a link
    (`javascript:`, `vbscript:`, `file:`, `data:`): its text stays, as it reads back."""
    marks = node.get("marks", [])
    readable = parser().validateLink
    kept = [
        m
        for m in marks
        if m["type"] != "link" or readable(str((m.get("attrs") or {}).get("href") or ""))
    ]
    return {**node, "marks": kept} if len(kept) != len(marks) else node


def _signature(nodes: list[Node]) -> list[tuple[str, list]]:
    """(character, the marks Markdown keeps) of each character; whitespace is written
    outside delimiters, so its bold, italic and strike do not count."""
    chars: list[tuple[str, list]] = []
    for node in nodes:
        if node["type"] == HARD_BREAK:
            chars.append(("\n", []))
            continue
        marks = sorted(
            (m["type"], _kept_attrs(m)) for m in node.get("marks", []) if m["type"] in _KEPT
        )
        for char in node["text"]:
            kept = [m for m in marks if m[0] not in _DELIMITERS] if char.isspace() else marks
            chars.append((char, kept))
    return chars


def _kept_attrs(mark: Node) -> tuple:
    attrs = mark.get("attrs") or {}
    return (attrs.get("href") or "", attrs.get("title") or "") if mark["type"] == "link" else ()


def _inline(nodes: list[Node]) -> str:
    """Inline nodes as Markdown: delimiters opened and closed as marks begin and end,
    whitespace kept outside bold, italic and strike (`** b**` would not be bold), inside
    links and code."""
    out: list[str] = []
    active: list[Node] = []
    pending = ""  # trailing whitespace of the last node, outside closing delimiters
    line_start = True
    for node in nodes:
        if node["type"] == HARD_BREAK:  # marks close before it (a break cannot be linked)
            _close_all(out, active, pending)
            out.append("\\\n")
            active, pending, line_start = [], "", True
            continue
        marks = _marks(node)
        keep = 0
        while keep < min(len(active), len(marks)) and active[keep] == marks[keep]:
            keep += 1
        _close_all(out, active[keep:], pending)
        lead, trail = "", ""
        if node["type"] != "text":  # another inline node: its text
            body = _escape(inline_text(node.get("content", [])), line_start)
        elif any(m["type"] == "code" for m in node.get("marks", [])):
            body = _code_span(node["text"])
        else:
            text = node["text"]
            core = text.strip()
            lead = text[: len(text) - len(text.lstrip())] if core else text
            trail = text[len(text.rstrip()) :] if core else ""
            # Whitespace before a line's first text is no protection: the block's
            # leading spaces are trimmed, and up to three still start a block (` # a`).
            body = _escape(core, line_start)
        opened = marks[keep:]  # a link (ranked first) opens before the whitespace
        out.extend(_open(m) for m in opened if m["type"] == "link")
        out.append(lead)
        out.extend(_open(m) for m in opened if m["type"] != "link")
        out.append(body)
        active, pending = marks, trail
        line_start = line_start and not body
    _close_all(out, active, pending)
    return "".join(out).strip(" \t")  # a leading tab would open a code block


def _close_all(out: list[str], marks: list[Node], pending: str) -> None:
    """Close `marks` (innermost first), `pending` whitespace after bold, italic and
    strike but inside a link."""
    closing = list(reversed(marks))
    out.extend(_close(m) for m in closing if m["type"] != "link")
    out.append(pending)
    out.extend(_close(m) for m in closing if m["type"] == "link")
