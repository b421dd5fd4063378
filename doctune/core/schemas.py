"""Data shapes shared by every stage: sections, pairs, expectations and verdicts.

These are the contracts between agents, the graph, the CLI and the files we write (JSONL). Keep them small and
JSON-serialisable; big text lives in the run's store keyed by id and version (see ``doctune.graph.store``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from pydantic import BaseModel, Field

ExecMode = Literal["run", "test", "obj"]
RequestedMode = Literal["auto", "run", "test", "obj"]
VerdictKind = Literal[
    "ok",
    "compile_error",
    "runtime_error",
    "test_failure",
    "wrong_output",
    "timeout",
    "resource_limit",
    "unsupported",
    "infra_error",
]
Outcome = Literal["ok", "compile_error", "runtime_error", "test_failure"]
# The evidence ladder (issue #16), strongest first: `tested` = passes non-vacuous tests (hidden tests of a triplet,
# or the block's own `test` blocks), `ran` = ran and printed what was stated, `compiled` = a fragment that
# type-checks, `conceptual` = no code to check. `none` = code that failed (a rejected pair).
Evidence = Literal["tested", "ran", "compiled", "conceptual", "none"]
EVIDENCE_RANK: dict[str, int] = {"none": 0, "conceptual": 1, "compiled": 2, "ran": 3, "tested": 4}


def sha256(text: str | bytes, n: int = 16) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:n]


class SectionStats(BaseModel):
    chars: int
    code_blocks: int
    languages: dict[str, int] = Field(default_factory=dict)


class Section(BaseModel):
    """One piece of a document, cut at a heading (or a paragraph boundary inside a huge heading)."""

    id: str = Field(description="Stable id: hash of source + heading path + ordinal.")
    source: str = Field(description="Document path as given (relative when possible).")
    path: list[str] = Field(description="Heading path from the top, e.g. ['Values', 'Primitive Types'].")
    level: int = Field(description="Heading level (1 for #); 0 for a preamble without heading.")
    ordinal: int = Field(description="Position of the section in its document (0-based).")
    part: int = Field(0, description="Part number when a huge section was split (0-based).")
    start_line: int = Field(description="1-based first line in the source.")
    end_line: int = Field(description="1-based last line in the source (inclusive).")
    text: str
    stats: SectionStats

    @property
    def title(self) -> str:
        return self.path[-1] if self.path else "(preamble)"

    @property
    def heading_path(self) -> str:
        return " > ".join(self.path)


class Expect(BaseModel):
    """What a code block is expected to do (the validator checks it when given)."""

    outcome: Outcome = "ok"
    stdout: str | None = None
    error_contains: str | None = None


class ZigTestCounts(BaseModel):
    """Per-test results of a `zig test` run, as doctune's own test runner reported them (not the exit status)."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failed_names: list[str] = Field(default_factory=list, description="Failing tests' names (first few).")
    unfinished: str | None = Field(
        None, description="The test that was running when the binary ended before its final report (exit, abort, signal)."
    )


class Verdict(BaseModel):
    """Result of validating one Zig block. ``ok`` means it did what it was expected to do (default: succeed)."""

    verdict: VerdictKind
    expected_met: bool | None = None
    mode: ExecMode | None = Field(None, description="How the block was executed.")
    compiled_only: bool = Field(False, description="A fragment that was only type-checked in a wrapper.")
    stage: str = Field("", description="compile | run | test | setup")
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = Field("", description="Trimmed compiler/runtime output (first error lines kept).")
    duration_s: float = 0.0
    cached: bool = False
    executor: str = ""
    tests: ZigTestCounts | None = Field(None, description="Per-test counts for test mode (None: no tests were run).")
    limit: str | None = Field(
        None, description="With verdict 'resource_limit': which limit (cpu, memory, pids, fsize, output, ...)."
    )

    @property
    def passed(self) -> bool:
        """True when the block behaved as expected (or succeeded when nothing was expected)."""
        if self.expected_met is not None:
            return self.expected_met
        return self.verdict == "ok"

    @property
    def evidence(self) -> Evidence:
        if not self.passed:
            return "none"
        if self.compiled_only or self.mode == "obj":
            return "compiled"
        return "tested" if self.mode == "test" else "ran"


class CodeCheck(BaseModel):
    """One program to check, as the floors above the validator hand it over (the trainer's reward, the evaluator):
    the validator turns it into its own block input."""

    id: str
    code: str
    mode: RequestedMode = "auto"
    expect: Expect | None = None


# A batch of checks -> one verdict each, in input order (the validator's `check_many`, passed down as a function).
ValidateMany = Callable[[list[CodeCheck]], Coroutine[Any, Any, list[Verdict]]]


class Attempt(BaseModel):
    """One generation (or repair) attempt of a pair, kept in its history."""

    n: int
    code_hash: str | None = None
    verdict: VerdictKind | None = None
    feedback: str | None = Field(None, description="Compiler/test output sent back for repair.")


class Pair(BaseModel):
    """An instruction/response pair grounded in a section."""

    id: str
    section_id: str
    heading_path: str
    source: str
    instruction: str
    response: str
    kind: Literal["code", "conceptual"] = "code"
    generator: str = Field(description="doc-examples | llm:<model>")
    prompt_hash: str | None = None
    expect: Expect | None = None
    verdict: Verdict | None = None
    evidence: Evidence = "none"
    tests: str | None = Field(
        None, description="Hidden Zig `test` blocks that call the solution (a triplet's tests; not in the response)."
    )
    attempts: list[Attempt] = Field(default_factory=list)
    judge_score: int | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    def code_blocks(self) -> list[str]:
        return extract_zig_blocks(self.response)

    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "user", "content": self.instruction},
            {"role": "assistant", "content": self.response},
        ]


_FENCE_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")


def extract_fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """Return (language, code) for each fenced block, honouring fence length and indentation."""
    blocks: list[tuple[str, str]] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE_RE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m.group("fence"), len(m.group("indent"))
        lang = (m.group("info").strip().split() or [""])[0].lower()
        body: list[str] = []
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
                break
            line = lines[i]
            # Remove the fence's own indentation (fences nested in list items).
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            i += 1
        blocks.append((lang, "\n".join(body) + "\n"))
        i += 1
    return blocks


def extract_zig_blocks(markdown: str) -> list[str]:
    return [code for lang, code in extract_fenced_blocks(markdown) if lang == "zig"]
