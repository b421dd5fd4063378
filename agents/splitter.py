"""The splitter: Markdown/MDX documents -> heading-bounded sections with stable ids and stats.

Public API: ``split_markdown`` (one text), ``split_paths`` (files or folders), ``read_markdown`` (one file,
checked). What ``doctune split`` prints (counts, size percentiles) is in ``split_stats``.

Rules, in order:

1. **Blocks.** The text is scanned line by line with a fence state. A fence opens with three or more backticks
   or tildes (any indentation, so fences inside list items count) and closes with a line of the same
   character at least as long. Nothing inside a fence is a heading.
2. **Headings.** ATX headings ``#`` .. ``#`` * ``max_depth`` outside fences start a section; deeper headings stay
   in the body. Text before the first heading is a preamble section (level 0, empty path). The heading path
   is the chain of enclosing headings (``Parent > Child``). A document needs at least one such heading.
3. **MDX.** In ``.mdx`` sources, top-level ``import``/``export`` statements outside fences are dropped
   (multi-line ones up to their closing bracket); JSX lines such as ``<Tabs>`` are kept as text.
4. **Merge.** A section under ``min_chars`` joins the previous section when that one is its parent or a
   sibling (same parent); otherwise, or when it is the short intro of sub-sections that follow it, it is
   prepended to the next section when that one lies under the same parent (a child or a sibling). The section it joins is the *primary* and keeps its own heading path.
   A small section with no such neighbour stays alone rather than crossing into another chapter.
5. **Split.** A section over ``max_chars`` is cut into parts (``part`` 0, 1, ...) at paragraph or fence
   boundaries, never inside a fence. An example unit (a short lead-in line, the fence, an ``Expected:`` line and
   its transcript fence) is kept together where it fits. A single fence longer than the limit stays whole;
   a huge paragraph without blank lines is cut at line ends.
6. **Ids.** ``sha256(source, heading path, ordinal among sections with the same path, part)``, shortened. They
   depend on neither the text nor the position, so re-runs match and editing one section keeps the others' ids
   (unless the edit moves it across ``min_chars``/``max_chars`` and so changes merges or parts).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from doctune.core.errors import InputError
from doctune.core.schemas import Section, SectionStats, extract_fenced_blocks, sha256
from doctune.core.settings import SplitSettings

MARKDOWN_SUFFIXES = (".md", ".mdx", ".markdown")

_FENCE_OPEN = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_HEADING = re.compile(r"^ {0,3}(?P<hashes>#{1,6})(?:[ \t]+(?P<title>.*?))?(?:[ \t]+#+)?[ \t]*$")
_MDX_STATEMENT = re.compile(r"^(import|export)\b")
# A lead-in paragraph this short ("**hello.zig**", "For example:") sticks to the fence after it.
_EXAMPLE_LEAD_MAX = 200


@dataclass
class _Line:
    text: str
    no: int  # 1-based line number in the source
    role: str = ""  # "" outside fences; "open", "in", "close" for a fence's lines

    @property
    def fence(self) -> bool:
        return self.role != ""


@dataclass
class _Raw:
    level: int
    path: list[str]
    lines: list[_Line] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(ln.text for ln in self.lines).strip("\n") + "\n"

    @property
    def size(self) -> int:
        return len(self.text.strip())


# --------------------------------------------------------------------------- scanning


def _fence_closes(line: str, fence: str) -> bool:
    s = line.strip()
    return len(s) >= len(fence) and set(s) == {fence[0]}


def _opening_fence(line: str) -> str | None:
    m = _FENCE_OPEN.match(line)
    if not m:
        return None
    fence = m.group("fence")
    if fence[0] == "`" and "`" in m.group("info"):
        return None  # CommonMark: a backtick fence's info string cannot hold backticks (inline code)
    return fence


def _scan(text: str, mdx: bool) -> list[_Line]:
    """Mark fence lines; drop MDX import/export statements found outside fences."""
    out: list[_Line] = []
    fence: str | None = None
    depth = 0  # open brackets of an MDX statement that spans several lines
    for no, line in enumerate(text.split("\n"), start=1):
        if fence is not None:
            closes = _fence_closes(line, fence)
            out.append(_Line(line, no, "close" if closes else "in"))
            fence = None if closes else fence
            continue
        if depth > 0 or (mdx and _MDX_STATEMENT.match(line)):
            depth = max(0, depth + sum(line.count(c) for c in "{([") - sum(line.count(c) for c in "})]"))
            continue
        fence = _opening_fence(line)
        out.append(_Line(line, no, "open" if fence else ""))
    return out


def _heading(line: _Line, max_depth: int) -> tuple[int, str] | None:
    if line.fence:
        return None
    m = _HEADING.match(line.text)
    if not m or len(m.group("hashes")) > max_depth:
        return None
    title = (m.group("title") or "").strip() or "(untitled)"
    return len(m.group("hashes")), title


def _raw_sections(lines: list[_Line], max_depth: int) -> list[_Raw]:
    sections: list[_Raw] = [_Raw(0, [])]
    stack: list[tuple[int, str]] = []  # (level, title) of the enclosing headings
    for line in lines:
        h = _heading(line, max_depth)
        if h is not None:
            level, title = h
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
            sections.append(_Raw(level, [t for _, t in stack]))
        sections[-1].lines.append(line)
    if not sections[0].text.strip():
        sections.pop(0)
    return sections


# --------------------------------------------------------------------------- merging


def _joins_previous(prev: _Raw, small: _Raw) -> bool:
    parent = small.path[:-1]
    return prev.level > 0 and (prev.path == parent or prev.path[:-1] == parent)


def _joins_next(small: _Raw, nxt: _Raw) -> bool:
    parent = small.path[:-1]
    return nxt.path[: len(parent)] == parent and len(nxt.path) > len(parent)


def _merge_small(sections: list[_Raw], min_chars: int) -> list[_Raw]:
    out: list[_Raw] = []
    pending: list[_Raw] = []  # small sections waiting to be prepended to the next one
    for i, sec in enumerate(sections):
        if pending and not _joins_next(pending[0], sec):
            out.extend(pending)  # no compatible next section: they stay alone
            pending = []
        # A short chapter intro ("# Appendix" before "## Grammar") belongs with its children, not the previous chapter.
        intro = i + 1 < len(sections) and sections[i + 1].path[: len(sec.path)] == sec.path
        if sec.size < min_chars and not pending and not intro and out and _joins_previous(out[-1], sec):
            out[-1].lines.extend(sec.lines)
        elif sec.size < min_chars:
            pending.append(sec)
        else:
            if pending:
                sec.lines[:0] = [ln for p in pending for ln in p.lines]
                pending = []
            out.append(sec)
    out.extend(pending)
    return out


# --------------------------------------------------------------------------- splitting huge sections


def _blocks(lines: list[_Line]) -> list[tuple[list[_Line], str]]:
    """Paragraphs and whole fences, as (lines, kind) with kind 'fence' or 'para'. Blank lines stay attached."""
    blocks: list[tuple[list[_Line], str]] = []
    cur: list[_Line] = []
    kind = "para"
    for ln in lines:
        if kind == "fence":
            cur.append(ln)
            if ln.role == "close":
                blocks.append((cur, kind))
                cur, kind = [], "para"
            continue
        if ln.role == "open":
            if cur:
                blocks.append((cur, kind))
            cur, kind = [ln], "fence"
            continue
        if not ln.text.strip() and cur and cur[-1].text.strip():
            cur.append(ln)
            blocks.append((cur, kind))
            cur = []
            continue
        cur.append(ln)
    if cur:
        blocks.append((cur, kind))
    return blocks


def _units(blocks: list[tuple[list[_Line], str]]) -> list[list[_Line]]:
    """Glue example units: short lead-in + fence + 'Expected:' paragraph + the transcript fence after it."""
    units: list[list[_Line]] = []
    glue_next = False
    for i, (lines, kind) in enumerate(blocks):
        text = "\n".join(ln.text for ln in lines).strip()
        transcript = kind == "fence" and i > 0 and _starts_expected(blocks[i - 1]) and not _is_zig(lines[0])
        glue_prev = units and (glue_next or text.startswith("Expected:") or transcript)
        if glue_prev:
            units[-1].extend(lines)
        else:
            units.append(list(lines))
        nxt_is_fence = i + 1 < len(blocks) and blocks[i + 1][1] == "fence"
        lead_in = nxt_is_fence and 0 < len(text) <= _EXAMPLE_LEAD_MAX
        glue_next = kind == "para" and (
            lead_in or _HEADING.match(text) is not None
        )  # a heading never ends a part
    return units


def _is_zig(opening: _Line) -> bool:
    return opening.text.strip().lstrip("`~").strip().lower().startswith("zig")


def _starts_expected(block: tuple[list[_Line], str]) -> bool:
    lines, kind = block
    return kind == "para" and "\n".join(ln.text for ln in lines).strip().startswith("Expected:")


def _size(lines: list[_Line]) -> int:
    return sum(len(ln.text) + 1 for ln in lines)


def _split_big(sec: _Raw, max_chars: int) -> list[list[_Line]]:
    if sec.size <= max_chars:
        return [sec.lines]
    pieces: list[list[_Line]] = []
    for unit in _units(_blocks(sec.lines)):
        if _size(unit) <= max_chars or any(ln.fence for ln in unit):
            pieces.append(unit)  # fits, or holds a fence: never cut inside a fence
        else:
            pieces.extend(_cut_lines(unit, max_chars))  # a huge plain paragraph: cut at line ends
    parts: list[list[_Line]] = [[]]
    for piece in pieces:
        if parts[-1] and _size(parts[-1]) + _size(piece) > max_chars:
            parts.append([])
        parts[-1].extend(piece)
    return [p for p in parts if any(ln.text.strip() for ln in p)]


def _cut_lines(lines: list[_Line], max_chars: int) -> list[list[_Line]]:
    out: list[list[_Line]] = [[]]
    for ln in lines:
        if out[-1] and _size(out[-1]) + len(ln.text) + 1 > max_chars:
            out.append([])
        out[-1].append(ln)
    return out


# --------------------------------------------------------------------------- public API


def _trim_blank(lines: list[_Line]) -> list[_Line]:
    start, end = 0, len(lines)
    while start < end and not lines[start].text.strip():
        start += 1
    while end > start and not lines[end - 1].text.strip():
        end -= 1
    return lines[start:end]


def section_stats(text: str) -> SectionStats:
    langs = Counter((lang or "none") for lang, _ in extract_fenced_blocks(text))
    return SectionStats(
        chars=len(text), code_blocks=sum(langs.values()), languages=dict(sorted(langs.items()))
    )


def section_id(source: str, path: list[str], ordinal: int, part: int) -> str:
    """Stable id: hash of where the section is, never of what it says."""
    return sha256("\x1f".join([source, " > ".join(path), str(ordinal), str(part)]))


def split_markdown(text: str, source: str, settings: SplitSettings | None = None) -> list[Section]:
    """Split one Markdown/MDX text into sections (see the module docstring for the rules).

    Raises InputError when the text is empty or has no heading up to ``settings.max_depth``.
    """
    settings = settings or SplitSettings()
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise InputError(f"{source}: the document is empty")
    lines = _scan(text, mdx=source.lower().endswith(".mdx"))
    raws = _raw_sections(lines, settings.max_depth)
    if not any(r.level > 0 for r in raws):
        hashes = "#" * settings.max_depth
        raise InputError(
            f"{source}: no Markdown headings found (at least one '#' .. '{hashes}' heading outside code is required)"
        )
    merged = _merge_small(raws, settings.min_chars)
    seen: Counter[tuple[str, ...]] = Counter()
    sections: list[Section] = []
    for raw in merged:
        key = tuple(raw.path)
        same_path = seen[key]
        seen[key] += 1
        for part, lines_ in enumerate(_split_big(raw, settings.max_chars)):
            lines_ = _trim_blank(lines_)
            body = "\n".join(ln.text for ln in lines_) + "\n"
            sections.append(
                Section(
                    id=section_id(source, raw.path, same_path, part),
                    source=source,
                    path=raw.path,
                    level=raw.level,
                    ordinal=len(sections),
                    part=part,
                    start_line=lines_[0].no,
                    end_line=lines_[-1].no,
                    text=body,
                    stats=section_stats(body),
                )
            )
    return sections


def read_markdown(path: Path | str) -> str:
    """Read one document as UTF-8 text; InputError (one line) for missing, binary, non-UTF-8 or empty files."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"{p}: cannot read: {e.strerror or e}") from None
    if b"\x00" in data:
        raise InputError(f"{p}: looks like a binary file (contains NUL bytes), expected UTF-8 Markdown")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{p}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); convert it to UTF-8"
        ) from None
    if not text.strip():
        raise InputError(f"{p}: the document is empty")
    return text


def markdown_files(paths: Iterable[Path | str]) -> list[Path]:
    """Expand folders to their Markdown files (recursive, sorted); files given explicitly are kept as is."""
    files: list[Path] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MARKDOWN_SUFFIXES)
            if not found:
                raise InputError(f"{p}: directory has no Markdown files ({', '.join(MARKDOWN_SUFFIXES)})")
            files.extend(found)
        else:
            files.append(p)
    if not files:
        raise InputError("no input documents given")
    return files


def split_paths(paths: Iterable[Path | str], settings: SplitSettings | None = None) -> list[Section]:
    """Split every document under ``paths`` (files or folders); ``source`` is the path as given."""
    sections: list[Section] = []
    files = markdown_files(paths)
    limit = (settings or SplitSettings()).max_doc_mb
    for f in files:  # size first: a huge file is refused before reading it into memory
        if f.is_file() and f.stat().st_size > limit * 2**20:
            raise InputError(
                f"{f}: {f.stat().st_size / 2**20:.1f} MB is larger than split.max_doc_mb={limit:g}; split it into "
                "several files or raise the limit (DOCTUNE_SPLIT__MAX_DOC_MB)"
            )
    for f in files:
        sections.extend(split_markdown(read_markdown(f), str(f), settings))
    return sections
