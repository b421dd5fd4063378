"""Scanning Zig source without a parser (Zig facts shared by the evaluator's task building and the executors'
stubber): skip comments, string and character literals; match brackets; find the next `{` outside them."""

from __future__ import annotations


def skip_literal(code: str, i: int) -> int:
    """If a comment, string or character literal (or a `\\\\` multiline string line) starts at ``i``, the index
    after it; else ``i``."""
    if code.startswith("//", i) or code.startswith("\\\\", i):
        j = code.find("\n", i)
        return len(code) if j < 0 else j
    if i < len(code) and code[i] in "\"'":
        quote, j = code[i], i + 1
        while j < len(code) and code[j] != quote and code[j] != "\n":
            j += 2 if code[j] == "\\" else 1
        return j + 1
    return i


def matching_close(code: str, i: int) -> int | None:
    """Index after the bracket closing the one at ``i`` (`(`, `[` or `{`); None when unbalanced."""
    opening, depth = code[i], 0
    closing = {"(": ")", "[": "]", "{": "}"}[opening]
    while i < len(code):
        j = skip_literal(code, i)
        if j != i:
            i = j
            continue
        if code[i] == opening:
            depth += 1
        elif code[i] == closing:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def next_brace(code: str, i: int) -> int | None:
    """Index of the first `{` at or after ``i`` outside comments and literals."""
    while i < len(code):
        j = skip_literal(code, i)
        if j != i:
            i = j
            continue
        if code[i] == "{":
            return i
        i += 1
    return None
