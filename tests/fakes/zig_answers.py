"""Canned answers of a QA-generator model, for the fake OpenAI server: matched by prompt content, never by order.

For each section the generator prompt names, ``responder`` answers with three pairs: a correct Zig program, a
program with a compile error that the repair prompt fixes, and a conceptual question. Repair prompts get the
fixed program. Judge prompts get a score. Usable as ``--responder tests.fakes.zig_answers:responder``.
"""

from __future__ import annotations

import re
from typing import Any

from tests.fakes.openai_server import messages_text

GOOD = 'const std = @import("std");\n\npub fn main() void {\n    std.debug.print("{d}\\n", .{VALUE});\n}\n'
# `missing_name` is never declared: "error: use of undeclared identifier 'missing_name'"
BROKEN = 'const std = @import("std");\n\npub fn main() void {\n    std.debug.print("{d}\\n", .{missing_name});\n}\n'
BROKEN_MARK = "missing_name"

_SECTION = re.compile(r'section "(?P<h>[^"]*)"')
_COVERED = re.compile(r"^- (?P<i>.+)$", re.M)


def section_of(body: dict[str, Any]) -> str:
    m = _SECTION.search(messages_text(body, "user"))
    return m.group("h") if m else "?"


def value_of(heading: str) -> int:
    return sum(map(ord, heading)) % 1000  # a deterministic number per section


def zig(code: str) -> str:
    return f"Here is the program:\n\n```zig\n{code}```\n"


def generate_answer(heading: str, covered: list[str]) -> dict[str, Any]:
    v = value_of(heading)
    suffix = f" (part {len(covered) // 3 + 1})" if covered else ""
    pairs = [
        {"instruction": f"Write a Zig program about {heading} that prints {v}{suffix}.",
         "response": zig(GOOD.replace("VALUE", str(v))), "kind": "code"},
        {"instruction": f"Write a Zig program about {heading} that prints {v + 1}{suffix}.",
         "response": zig(BROKEN), "kind": "code"},
        {"instruction": f"What does the section {heading} explain{suffix}?",
         "response": f"It explains {heading} in Zig 0.14.0.", "kind": "conceptual"},
    ]
    return {"pairs": pairs}


def repair_answer(body: dict[str, Any]) -> dict[str, Any]:
    user = messages_text(body, "user")
    m = re.search(r"prints (\d+)", user)
    return {"response": zig(GOOD.replace("VALUE", m.group(1) if m else "0"))}


def responder(body: dict[str, Any]) -> dict[str, Any] | str:
    user = messages_text(body, "user")
    if "failed when its code was checked" in user:
        return repair_answer(body)
    if "You grade training data" in user:
        return {"score": 20 if BROKEN_MARK in user else 85, "reason": "canned"}
    if "instruction/response pairs" in user or "NEW instruction/response pairs" in user:
        return generate_answer(section_of(body), _COVERED.findall(user))
    return "ok"


# ---- triplets: instruction, solution, hidden tests (or a program's exact stdout) ----------------------------
# For each section: a right solution with tests that catch a wrong one, a wrong solution that a hidden test
# catches (the repair prompt names that test; the repair fixes the solution), vacuous tests that pass on any body
# (the repair prompt says so; the repair writes real tests), and a program with its exact stdout.
WRONG_MARK = "x * 2"


def triple_fn(wrong: bool = False) -> str:
    return f"pub fn triple(x: i32) i32 {{\n    return {WRONG_MARK if wrong else 'x * 3'};\n}}\n"


def triple_tests(v: int) -> str:
    return (f'test "triple of {v}" {{\n    try std.testing.expectEqual(@as(i32, {3 * v}), triple({v}));\n}}\n'
            'test "triple of 0" {\n    try std.testing.expectEqual(@as(i32, 0), triple(0));\n}\n')


VACUOUS_TESTS = 'test "triple exists" {\n    try std.testing.expect(@TypeOf(triple) == fn (i32) i32);\n}\n'


def stdout_program(v: int) -> str:
    return ('const std = @import("std");\n\npub fn main() !void {\n'
            f'    try std.io.getStdOut().writer().print("{{d}}\\n", .{{{v}}});\n}}\n')


def triplet_answer(heading: str) -> dict[str, Any]:
    v = value_of(heading)
    ask = f"Write a Zig function `triple(x: i32) i32` about {heading} that returns three times x"
    pairs = [
        {"instruction": f"{ask} (right).", "response": zig(triple_fn()), "kind": "code",
         "tests": triple_tests(v), "expected_stdout": ""},
        {"instruction": f"{ask} (first try wrong).", "response": zig(triple_fn(wrong=True)), "kind": "code",
         "tests": triple_tests(v + 1), "expected_stdout": ""},
        {"instruction": f"{ask} (vacuous tests).", "response": zig(triple_fn()), "kind": "code",
         "tests": VACUOUS_TESTS, "expected_stdout": ""},
        {"instruction": f"Write a Zig program about {heading} that writes {v} to stdout.",
         "response": zig(stdout_program(v)), "kind": "code", "tests": "", "expected_stdout": f"{v}\n"},
    ]
    return {"pairs": pairs}


def triplet_repair(body: dict[str, Any]) -> dict[str, Any]:
    user = messages_text(body, "user")
    if "do not test its solution" in user:  # vacuous tests: keep the solution, write tests that call it
        m = re.search(r"about (.+?) that returns", user)
        return {"response": zig(triple_fn()), "tests": triple_tests(value_of(m.group(1)) if m else 1)}
    return {"response": zig(triple_fn()), "tests": ""}


def triplet_responder(body: dict[str, Any]) -> dict[str, Any] | str:
    """Like ``responder``, with triplets. Usable as ``--responder tests.fakes.zig_answers:triplet_responder``."""
    user = messages_text(body, "user")
    if "failed when its code was checked" in user or "do not test its solution" in user:
        return triplet_repair(body)
    if "instruction/response pairs" in user:
        return triplet_answer(section_of(body))
    return responder(body)
