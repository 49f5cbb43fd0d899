"""Restoring a version live: the forward update that makes a document's content equal
an older state's.

Replacing a stored document with an old copy does not work with Yjs: every connected
client still holds the newer items and pushes them back. A restore must instead be new
operations on top of what everyone has: delete what the version lacks, insert what it
has and the document lacks, each as an item of a new client. `restore_update` computes
them on a scratch copy of the current document (its own client id, one transaction)
and returns that transaction's update, which the room then applies like any client's
update (stored, broadcast, fanned out): editors show the version's content and keep
editing on top of it.

Per type:

    map, XML attributes    keys the version lacks deleted, others set; a nested type of
                           the same kind (and tag) is synced in place, not replaced
    array, XML children    difflib matching of the children's canonical content: equal
                           runs kept, the rest deleted and inserted; replaced pairs of the
                           same kind synced in place (a paragraph edited stays that
                           paragraph, so other clients' cursors in it stay put)
    text, XML text         common prefix and suffix (characters with their formatting
                           attributes, embeds) kept, the middle deleted and the version's
                           inserted with explicit attributes (an insert without them would
                           inherit the formatting of the character before it)

Limits: a root the current document uses as another kind than the version (the same
name read as a map by one and a text by the other: no editor does that) keeps its
current items beside the version's. Subdocuments are compared by guid and not
restored. pycrdt counts text positions in UTF-8 bytes (an embed counts 1): so do the
offsets here.
"""

from __future__ import annotations

import difflib
import json
import math
from typing import Any

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

_XML_CHILD = (XmlElement, XmlText)
_SHARED = (Map, Array, Text, XmlFragment, XmlElement, XmlText)
# Root kinds, told from content as documents/content.py does (an update names no type).
_KINDS = (XmlFragment, Text, Array, Map)


def root_kinds(update: bytes) -> dict[str, type | None]:
    """{root name: its kind (XmlFragment, Text, Array or Map), None when empty}: each
    kind tried on a scratch copy (casting a root fixes its type in that document)."""
    names = list(_doc(update).keys())
    kinds: dict[str, type | None] = dict.fromkeys(names)
    for kind in _KINDS:
        doc = _doc(update)
        for name in names:
            if kinds[name] is not None:
                continue
            root = doc.get(name, type=kind)
            if kind is XmlFragment:
                found = any(isinstance(child, _XML_CHILD) for child in root.children)
            elif kind is Text:
                # An array's items read as embeds: a text has characters or formatting.
                found = any(isinstance(ins, str) or attrs for ins, attrs in root.diff())
            else:
                found = len(root) > 0
            if found:
                kinds[name] = kind
    return kinds


def _doc(update: bytes) -> Doc:
    doc: Doc = Doc()
    doc.apply_update(update)
    return doc


def restore_update(current: bytes, version: bytes) -> bytes:
    """The update that, applied to the document `current` (one Yjs update of it), makes
    its content equal `version`'s; b'' when it already does."""
    doc = _doc(current)  # a new Doc: a client id of its own for the new operations
    target = _doc(version)
    kinds_now, kinds_then = root_kinds(current), root_kinds(version)
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    try:
        with doc.transaction():
            for name in sorted(set(kinds_now) | set(kinds_then)):
                kind = kinds_then.get(name) or kinds_now.get(name)
                if kind is None:
                    continue
                root = doc.get(name, type=kind)
                if kinds_then.get(name) is None:
                    _clear(root)
                else:
                    _sync(root, target.get(name, type=kind))
    finally:
        doc.unobserve(subscription)
    return updates[0] if updates else b""


def document_content(update: bytes) -> dict[str, Any]:
    """{root name: canonical content} of a document: what a restore makes equal
    (formatting attributes, embeds, XML attributes and tags included; numbers as
    JSON sees them). Empty roots are left out."""
    doc = _doc(update)
    content = {}
    for name, kind in root_kinds(update).items():
        if kind is not None:
            content[name] = canonical(doc.get(name, type=kind))
    return content


def canonical(value: Any) -> Any:
    """A shared type or value as plain, comparable Python (see `document_content`)."""
    if isinstance(value, Map):
        return {"map": {k: canonical(v) for k, v in sorted(value.items())}}
    if isinstance(value, Array):
        return {"array": [canonical(v) for v in value]}
    if isinstance(value, XmlText):
        return {"xmltext": _runs(value), "attrs": _attributes(value)}
    if isinstance(value, Text):
        return {"text": _runs(value)}
    if isinstance(value, XmlElement):
        return {
            "element": value.tag,
            "attrs": _attributes(value),
            "children": [canonical(c) for c in value.children],
        }
    if isinstance(value, XmlFragment):
        return {"fragment": [canonical(c) for c in value.children]}
    if isinstance(value, Doc):
        return {"subdoc": str(value.guid)}
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return int(value)
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def _attributes(value: XmlText | XmlElement) -> dict[str, Any]:
    view: Any = value.attributes  # pycrdt types its __iter__ as returning an Iterable
    return dict(view)


def _attrs(attrs: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (attrs or {}).items() if v is not None}


def _runs(text: Text | XmlText) -> list:
    """The text's delta with runs of equal attributes merged (a delete may leave two
    runs side by side), attributes normalized ({} for none)."""
    runs: list = []
    for insert, attrs in text.diff():
        attrs = _attrs(attrs)
        if isinstance(insert, str) and runs and isinstance(runs[-1][0], str):
            if runs[-1][1] == attrs:
                runs[-1][0] += insert
                continue
        runs.append([insert if isinstance(insert, str) else canonical(insert), attrs])
    return runs


# --- syncing one type onto another -------------------------------------------------


def _clear(root: Any) -> None:
    if isinstance(root, Map):
        for key in list(root.keys()):
            del root[key]
    elif isinstance(root, XmlFragment):
        if len(root.children):
            del root.children[0 : len(root.children)]
    elif isinstance(root, Text):
        if len(root):
            del root[0 : len(root)]
    elif len(root):
        del root[0 : len(root)]


def _sync(dst: Any, src: Any) -> None:
    """Make `dst` (integrated, in the document being changed) hold what `src` holds."""
    if isinstance(dst, Map):
        _sync_map(dst, src)
    elif isinstance(dst, Array):
        _sync_sequence(dst, list(src), dst.insert)
    elif isinstance(dst, (Text, XmlText)):
        if isinstance(dst, XmlText):
            _sync_attributes(dst.attributes, src.attributes)
        _sync_text(dst, src)
    elif isinstance(dst, (XmlElement, XmlFragment)):
        if isinstance(dst, XmlElement):
            _sync_attributes(dst.attributes, src.attributes)
        _sync_sequence(dst.children, list(src.children), dst.children.insert)


def _sync_map(dst: Map, src: Map) -> None:
    wanted = dict(src.items())
    for key in [k for k in dst.keys() if k not in wanted]:
        del dst[key]
    for key, value in wanted.items():
        if key in dst:
            now = dst[key]
            if _same_kind(now, value):
                if isinstance(value, _SHARED):
                    _sync(now, value)
                    continue
                if canonical(now) == canonical(value):
                    continue
        dst[key] = _prelim(value)
        if isinstance(value, _SHARED):
            _sync(dst[key], value)


def _sync_attributes(dst: Any, src: Any) -> None:
    """XML attributes (strings): set what differs, delete what the version lacks."""
    wanted = dict(src)
    for key in [k for k, _ in dst if k not in wanted]:
        del dst[key]
    for key, value in wanted.items():
        if dst.get(key) != value:
            dst[key] = value


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, _SHARED) or isinstance(b, _SHARED):
        if type(a) is not type(b):
            return False
        return not isinstance(a, XmlElement) or a.tag == b.tag
    return not isinstance(a, Doc) and not isinstance(b, Doc)


def _prelim(value: Any) -> Any:
    """What to insert for `value`: an empty type of its kind (filled by `_sync` once
    integrated), or the value itself."""
    if isinstance(value, XmlElement):
        return XmlElement(value.tag)
    if isinstance(value, _SHARED):
        return type(value)()
    if isinstance(value, Doc):
        return Doc(guid=value.guid)
    return value


def _signature(value: Any) -> str:
    return json.dumps(canonical(value), sort_keys=True, default=repr)


def _sync_sequence(dst: Any, wanted: list, insert: Any) -> None:
    """An array's (or XML children's) items made equal to `wanted`: matched by content,
    edited from the end so the indexes of what comes before stay valid."""
    current = list(dst)
    matcher = difflib.SequenceMatcher(
        a=[_signature(v) for v in current], b=[_signature(v) for v in wanted], autojunk=False
    )
    for op, i1, i2, j1, j2 in reversed(matcher.get_opcodes()):
        if op == "equal":
            continue
        paired = 0
        if op == "replace":
            # Same-kind pairs edited in place, from the start of the run.
            while (
                paired < min(i2 - i1, j2 - j1)
                and isinstance(wanted[j1 + paired], _SHARED)
                and _same_kind(current[i1 + paired], wanted[j1 + paired])
            ):
                paired += 1
        if i2 > i1 + paired:
            del dst[i1 + paired : i2]
        for offset, value in enumerate(wanted[j1 + paired : j2]):
            index = i1 + paired + offset
            inserted = insert(index, _prelim(value))
            if isinstance(value, _SHARED):
                _sync(inserted if inserted is not None else dst[index], value)
        for k in range(paired - 1, -1, -1):
            _sync(dst[i1 + k], wanted[j1 + k])


def _units(text: Text | XmlText) -> list[tuple[Any, dict[str, Any], int]]:
    """(character or embed, attributes, its length in pycrdt's offsets) in order."""
    units: list[tuple[Any, dict[str, Any], int]] = []
    for insert, attrs in text.diff():
        attrs = _attrs(attrs)
        if isinstance(insert, str):
            units.extend((ch, attrs, len(ch.encode())) for ch in insert)
        else:
            units.append((insert, attrs, 1))
    return units


def _sync_text(dst: Text | XmlText, src: Text | XmlText) -> None:
    now, then = _units(dst), _units(src)
    start = 0
    while start < min(len(now), len(then)) and _same_unit(now[start], then[start]):
        start += 1
    end = 0
    while end < min(len(now), len(then)) - start and _same_unit(now[-1 - end], then[-1 - end]):
        end += 1
    offset = sum(unit[2] for unit in now[:start])
    removed = sum(unit[2] for unit in now[start : len(now) - end])
    if removed:
        del dst[offset : offset + removed]
    run: list[str] = []
    run_attrs: dict[str, Any] = {}
    for value, attrs, size in then[start : len(then) - end]:
        if isinstance(value, str) and (not run or attrs == run_attrs):
            run.append(value)
            run_attrs = attrs
            continue
        offset = _flush(dst, offset, run, run_attrs)
        run = []
        if isinstance(value, str):
            run, run_attrs = [value], attrs
        else:
            dst.insert_embed(offset, value, dict(attrs))
            offset += size
    _flush(dst, offset, run, run_attrs)


def _flush(dst: Text | XmlText, offset: int, run: list[str], attrs: dict[str, Any]) -> int:
    """Insert a run of characters with exactly `attrs` (an explicit {} clears the
    formatting it would inherit); the offset after it."""
    if not run:
        return offset
    value = "".join(run)
    dst.insert(offset, value, dict(attrs))
    return offset + len(value.encode())


def _same_unit(a: tuple, b: tuple) -> bool:
    if a[1] != b[1]:
        return False
    if isinstance(a[0], str) or isinstance(b[0], str):
        return a[0] == b[0]
    return canonical(a[0]) == canonical(b[0])
