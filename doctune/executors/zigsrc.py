"""Reading Zig source without compiling it: what a block is (program, tests, fragment), what it imports, how to
wrap a fragment so its declarations are type-checked, and how to trim compiler output for the repair loop.

These are heuristics on text (comments and string literals are blanked first); the compiler has the last word.
"""

from __future__ import annotations

import re
from typing import Literal

Kind = Literal["run", "test", "both", "fragment"]

_LINE_COMMENT = re.compile(r"//[^\n]*")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_MULTILINE_STR = re.compile(r"^[ \t]*\\\\[^\n]*$", re.MULTILINE)
_MAIN = re.compile(r"^[ \t]*pub\s+fn\s+main\s*\(", re.MULTILINE)
_TEST = re.compile(r'^[ \t]*test\s*(?:"|[A-Za-z_@]|\{)', re.MULTILINE)
_TOP_DECL = re.compile(
    r"^(?:pub\s+)?(?:(?:export|extern(?:\s+\"[^\"]*\")?|inline|noinline|threadlocal)\s+)*"
    r"(?:fn|const|var)\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)\b",
    re.MULTILINE,
)
_IMPORT = re.compile(r'@import\(\s*"(?P<path>[^"]+)"\s*\)')
_BUILTIN_MODULES = {"std", "builtin", "root"}
_ERROR_LINE = re.compile(r"^\S[^\n]*:\d+:\d+: (?:error|note): ", re.MULTILINE)
_WRAP_NAME = "__doctune_refs"


def strip_comments_and_strings(code: str) -> str:
    """Blank out comments and string literals (so `// test "x"` is not a test), keeping line structure."""
    code = _MULTILINE_STR.sub("", code)
    code = _STRING.sub('""', code)
    return _LINE_COMMENT.sub("", code)


def classify(code: str) -> Kind:
    """program (`pub fn main`) → run; `test` blocks → test; both → both; neither → fragment."""
    bare = strip_comments_and_strings(code)
    has_main, has_tests = bool(_MAIN.search(bare)), bool(_TEST.search(bare))
    if has_main and has_tests:
        return "both"
    if has_main:
        return "run"
    return "test" if has_tests else "fragment"


def imports(code: str) -> list[str]:
    """Every `@import("…")` target, in order (string literals are kept for this one)."""
    no_comments = _LINE_COMMENT.sub("", _MULTILINE_STR.sub("", code))
    return [m.group("path") for m in _IMPORT.finditer(no_comments)]


def missing_imports(code: str, files: dict[str, str]) -> list[str]:
    """Imports we cannot satisfy: files not given, and named modules other than std/builtin/root."""
    missing: list[str] = []
    for path in imports(code):
        if path in _BUILTIN_MODULES:
            continue
        if not path.endswith(".zig") and not path.endswith(".zon"):
            missing.append(path)  # a package module (`@import("clap")`): we have no build.zig to provide it
        elif path.lstrip("./") not in files and path not in files:
            missing.append(path)
    return missing


def needs_libc(code: str) -> bool:
    """Code that only builds against libc (C imports, `extern "c"`, the C allocator)."""
    bare = strip_comments_and_strings(code)
    return bool(
        re.search(r'@cImport|extern\s+"c"|std\.c\.|c_allocator|std\.heap\.raw_c_allocator', bare)
    ) or ('extern "c"' in code)


_EXTERN_FN = re.compile(r"^\s*(?:pub\s+)?extern\s+fn\b", re.MULTILINE)


def needs_companion(code: str) -> bool:
    """Declares `extern fn`s without a library (`extern "c"` is libc's): their definitions live in a companion
    file the block does not include, so it cannot link on its own."""
    return bool(_EXTERN_FN.search(strip_comments_and_strings(code)))


_TOP_FN = re.compile(r"^(?:pub\s+)?(?:(?:export|inline|noinline)\s+)*fn\s")


def errors_only_in_fn_bodies(code: str, output: str, root_name: str) -> bool:
    """Every compile error in `output` lies inside a top-level function of `code` (lines from `fn` to its
    closing `}` in column 0). Zig analyses a function body only when the function is used."""
    inside: set[int] = set()
    start = None
    for n, line in enumerate(strip_comments_and_strings(code).splitlines(), 1):
        if start is None and _TOP_FN.match(line):
            start = n
        if start is not None:
            inside.add(n)
            if line.startswith("}") or (n == start and line.rstrip().endswith("}")):
                start = None
    lines = [int(m.group(1)) for m in re.finditer(rf"(?m)^{re.escape(root_name)}:(\d+):\d+: error: ", output)]
    return bool(lines) and all(n in inside for n in lines)


def top_level_names(code: str) -> list[str]:
    bare = strip_comments_and_strings(code)
    seen: dict[str, None] = {}
    for m in _TOP_DECL.finditer(bare):
        seen.setdefault(m.group("name"), None)
    return [n for n in seen if n != "_"]


def wrap_fragment(code: str) -> str:
    """Append a comptime block referencing every top-level declaration, so Zig's lazy analysis checks them.

    Appended (not prepended) so the compiler's file:line:col still point at the user's lines.
    """
    names = top_level_names(code)
    if not names:
        return code
    refs = "".join(f"    _ = &{n};\n" for n in names)
    sep = "" if code.endswith("\n") else "\n"
    return f"{code}{sep}\ncomptime {{ // {_WRAP_NAME}\n{refs}}}\n"


def trim_output(text: str, cap: int = 4096) -> str:
    """Keep the compiler's first error lines (file:line:col + source + caret) first, then the rest, ≤ cap."""
    if len(text) <= cap:
        return text
    lines = text.splitlines(keepends=True)
    first = next((i for i, ln in enumerate(lines) if _ERROR_LINE.match(ln)), 0)
    kept = "".join(lines[first:])
    if len(kept) > cap:
        kept = kept[: cap - 40]
        kept = kept[: kept.rfind("\n") + 1] if "\n" in kept else kept
    dropped = len(text) - len(kept)
    return kept + f"... [{dropped} more bytes trimmed]\n"
