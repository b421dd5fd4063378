"""Rewriting Zig source without compiling it: function bodies replaced by a panic (a "stub" that keeps every
signature, so code calling it still compiles), test declarations found and removed, and their names.

Used by the vacuity check of hidden tests: tests that still pass when the solution's bodies are stubbed do not
test the solution, and tests that still pass when its functions compute nothing (``hollow_bodies``) do not check
what it returns. A scanner, not a parser: comments, string and character literals are skipped, braces matched.
Functions returning `type` (generic containers) keep their body, and the functions inside it are stubbed.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from doctune.core.zigscan import matching_close, skip_literal

STUB_PANIC = '@panic("stub")'
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_]")
_GAP = r"(?:\s|//[^\n]*(?:\n|$))"  # Zig allows whitespace and comments between tokens
_FN_HEAD = re.compile(rf'fn{_GAP}+(?:[A-Za-z_][A-Za-z0-9_]*|@"[^"\n]*"){_GAP}*\(')
_TEST_HEAD = re.compile(
    rf'test(?:{_GAP}*"(?P<name>(?:[^"\\\n]|\\.)*)"|{_GAP}*(?P<quoted>@"[^"\n]*")'
    rf"|{_GAP}+(?P<ident>[A-Za-z_][A-Za-z0-9_]*))?{_GAP}*\{{"
)
_TYPE_LITERAL = re.compile(r"\b(?:error|struct|enum|union|opaque)\s*(?:\([^(){}]*\))?\s*$")
_PARAM_NAME = re.compile(r'^(?:(?:comptime|noalias)\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*|@"[^"]*")\s*:')


def _at_word(code: str, i: int, head: re.Pattern[str]) -> re.Match[str] | None:
    """``head`` matching at ``i`` when ``i`` starts a word (not `.fn`, `@fn`, `myfn`)."""
    if i > 0 and (_IDENT_CHAR.match(code[i - 1]) or code[i - 1] in "@."):
        return None
    return head.match(code, i)


def _body_open(code: str, i: int) -> int | None:
    """The `{` opening a function body whose return type starts at ``i``: braces of type literals in the return
    type (`error{A}!T`, `struct { … }`) are skipped; None when a `;` comes first (a prototype, an extern)."""
    while i < len(code):
        j = skip_literal(code, i)
        if j != i:
            i = j
            continue
        c = code[i]
        if c in "([":
            i = matching_close(code, i) or len(code)
            continue
        if c == ";":
            return None
        if c == "{":
            if not _TYPE_LITERAL.search(code[:i]):
                return i
            i = matching_close(code, i) or len(code)
            continue
        i += 1
    return None


def param_names(params: str, rest: str = "") -> list[str]:
    """Names of the parameters in a parameter list's text (without the parentheses) that a stub must discard:
    not `_` or `...`, and not used later in the signature (a later parameter's type or ``rest``, the return type):
    Zig rejects discarding a parameter that is used."""
    names, depth, start = [], 0, 0
    parts: list[tuple[str, int]] = []
    for k, c in enumerate(params):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append((params[start:k], k))
            start = k + 1
    parts.append((params[start:], len(params)))
    for part, end in parts:
        lines = [ln for ln in part.strip().splitlines() if not ln.strip().startswith("//")]
        m = _PARAM_NAME.match(" ".join(lines).strip())
        if m is None or m.group("name") == "_":
            continue
        used_later = re.search(rf"(?<![\w@.]){re.escape(m.group('name'))}\b", params[end:] + " " + rest)
        if not used_later:
            names.append(m.group("name"))
    return names


def stub_bodies(code: str) -> str:
    """``code`` with every function body replaced by ``{ _ = param; … @panic("stub"); }`` (parameters discarded
    so they are not unused); signatures, declarations and tests are kept. Functions returning `type` keep their
    body and the functions inside it are stubbed."""
    return _replace_bodies(code, lambda discards, _ret: f"{{ {discards}{STUB_PANIC}; }}")


def hollow_bodies(code: str) -> str:
    """``code`` with every function computing nothing: it returns `undefined` (a `void` one just returns, a
    `noreturn` one panics). Tests that still pass on it call the solution without checking what it returns."""

    def body(discards: str, ret: str) -> str:
        last = re.split(r"[\s!]", ret.strip())[-1]
        if last == "noreturn":
            return f"{{ {discards}{STUB_PANIC}; }}"
        return f"{{ {discards}}}" if last == "void" else f"{{ {discards}return undefined; }}"

    return _replace_bodies(code, body)


def _replace_bodies(code: str, body: Callable[[str, str], str]) -> str:
    """``code`` with each function body replaced by ``body(discards, return type text)``."""
    out: list[str] = []
    last = i = 0
    while i < len(code):
        j = skip_literal(code, i)
        if j != i:
            i = j
            continue
        m = _at_word(code, i, _FN_HEAD) if code[i] == "f" else None
        if m is None:
            i += 1
            continue
        paren = m.end() - 1
        after = matching_close(code, paren)
        brace = _body_open(code, after) if after is not None else None
        end = matching_close(code, brace) if brace is not None else None
        if after is None or brace is None or end is None:
            i = m.end()
            continue
        if code[after:brace].strip() == "type":
            i = brace + 1  # a generic container: keep it, stub what it contains
            continue
        names = param_names(code[paren + 1 : after - 1], code[after:brace])
        discards = "".join(f"_ = {n}; " for n in names)
        out += [code[last:brace], body(discards, code[after:brace])]
        last = i = end
    out.append(code[last:])
    return "".join(out)


def find_test_decls(code: str) -> list[tuple[int, int, str]]:
    """(start, end, name) of every `test` declaration; the name is the string or identifier after `test`
    ("" for an unnamed `test { … }`)."""
    found: list[tuple[int, int, str]] = []
    i = 0
    while i < len(code):
        j = skip_literal(code, i)
        if j != i:
            i = j
            continue
        m = _at_word(code, i, _TEST_HEAD) if code[i] == "t" else None
        end = matching_close(code, m.end() - 1) if m else None
        if m is None or end is None:
            i += 1
            continue
        found.append((i, end, m.group("name") or m.group("ident") or (m.group("quoted") or "")[2:-1]))
        i = end
    return found


def declared_test_names(code: str) -> list[str]:
    return [name for _, _, name in find_test_decls(code)]


def strip_tests(code: str) -> str:
    """``code`` without its `test` declarations."""
    out, last = [], 0
    for start, end, _ in find_test_decls(code):
        out.append(code[last:start])
        last = end
    out.append(code[last:])
    return "".join(out)
