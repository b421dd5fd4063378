"""Checking pairs: which Zig blocks of a pair run and how, what their verdicts make of the pair, and the repair.

Plain Python (no LangGraph). The graph's validate/repair nodes load pairs, call ``check_pairs`` / ``repair_one``
and store what comes back. The rules:

- **What runs** (``plan``). Every ```zig block of the response (for a "what happens" pair that states an
  expected failure: the instruction's blocks, run the way the doc ran them). A triplet (``Pair.tests``) runs its
  solution (the response's longest block) with the hidden tests appended, in test mode, and the same with every
  function body of the solution stubbed (``@panic("stub")``) and its own tests removed, and once more with every
  function hollow (returning ``undefined``): the vacuity check. All checks of all pairs go to the validator in
  one call, so the batches share compiles.
- **The pair's verdict and evidence** (``judge_pair``). An executor fault anywhere makes the pair ``infra``
  (never repaired, never blamed on the code); else the first check that did not pass makes it failing; else it is
  accepted with the weakest evidence of its checks (``tested`` > ``ran`` > ``compiled``; no code: ``conceptual``).
  Hidden tests that still pass on the stub, or on the hollow solution (they call it without checking what it
  returns), are vacuous: the pair goes to repair for new tests when it can, else
  it is accepted as ``ran`` (never ``tested``); a stub that cannot be judged (it does not compile: a body the
  code needs at comptime), or hidden tests that did not all report passed (a skipped one), are demoted the same
  way.
- **The repair** (``repair_request``, ``repair_one``). The model sees which hidden test failed and the trimmed
  compiler/test output, or, for vacuous tests, that they pass on a stub; a repair already made in this round (a
  retried node, a resumed run) is kept, not asked again.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from doctune.agents.generator import PairGenerator, RepairRequest
from doctune.agents.validator import BlockInput
from doctune.core.schemas import (
    EVIDENCE_RANK,
    Attempt,
    Evidence,
    Pair,
    RequestedMode,
    Verdict,
    extract_zig_blocks,
    sha256,
)
from doctune.executors.zigsrc import top_level_names
from doctune.executors.zigstub import declared_test_names, hollow_bodies, strip_tests, stub_bodies

ValidateMany = Callable[[Sequence[BlockInput]], Awaitable[list[Verdict]]]
Role = Literal["block", "hidden", "stub", "hollow"]
Status = Literal["accepted", "failing", "infra"]
Vacuity = Literal["non_vacuous", "vacuous", "inconclusive"]

MAX_FEEDBACK_CHARS = 4000  # output sent back for repair (the first errors matter most)
VACUOUS_FEEDBACK = (
    'The hidden tests still pass when every function body of the solution is replaced by @panic("stub"): they '
    "do not test the solution. Write tests that call the solution's functions and check their results with "
    "std.testing, so that a wrong or missing implementation fails them."
)
HOLLOW_FEEDBACK = (
    "The hidden tests still pass when every function of the solution returns an undefined value (or, if it "
    "returns nothing, does nothing): they call the solution but do not check what it computes. Write tests that "
    "check each result against the exact expected value with std.testing.expectEqual (and side effects where the "
    "function has them), so that a wrong implementation fails them."
)
_ONE_LINE_DECL = re.compile(r"^(?:pub\s+)?const\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=[^\n]*;[ \t]*$", re.M)
_USES_STD = re.compile(r"\bstd\.")
_READS_SOURCE = re.compile(r"@(?:embedFile|src)\s*\(")
_STUB_FAILED = {"test_failure", "runtime_error", "timeout", "resource_limit"}


@dataclass(frozen=True)
class Check:
    """One block to validate for a pair, and what it stands for."""

    pair_id: str
    role: Role
    block: BlockInput


@dataclass
class PairCheck:
    """What the checks made of one pair."""

    status: Status
    verdict: Verdict | None
    evidence: Evidence
    vacuity: dict[str, Any] | None = None


@dataclass
class CheckRound:
    """One validation round of a section's pending pairs (ids), split by outcome."""

    accepted: list[str] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)  # {"pair_id", "reason": "infra_error"}


# ---------------------------------------------------------------- what runs


def blocks_to_check(pair: Pair) -> list[str]:
    """The Zig blocks whose behaviour the pair claims: the response's, else (for 'what happens' pairs) the
    instruction's."""
    blocks = pair.code_blocks()
    if not blocks and pair.expect is not None:
        blocks = extract_zig_blocks(pair.instruction)
    return blocks


def mode_for(pair: Pair) -> RequestedMode:
    """'auto' (the validator classifies; fragments are type-checked in a wrapper), except for pairs that claim a
    failure: those must be reproduced exactly the way the doc ran them (e.g. `zig build-obj`)."""
    if pair.expect is not None and pair.expect.outcome != "ok":
        return pair.meta.get("mode", "auto")
    return "auto"


def solution_index(pair: Pair) -> int | None:
    """Which response block is a triplet's solution: the longest (the first of equal ones), as eval takes it."""
    blocks = pair.code_blocks()
    if not blocks:
        return None
    return max(range(len(blocks)), key=lambda k: (len(blocks[k]), -k))


def with_tests(solution: str, tests: str) -> str:
    """The solution followed by the hidden tests, as one file. A one-line top-level `const` of the tests that the
    solution declares the same way (`const std = @import("std");`) is dropped from the tests; declared otherwise,
    it stays, and the compiler refuses the duplicate (a solution cannot hand the tests its own `std` or
    `testing`). `std` is declared for tests that use it unless the solution declares it as `@import("std")`."""
    same = {m.group("name"): _squeeze(m.group(0)) for m in _ONE_LINE_DECL.finditer(solution)}
    tests = _ONE_LINE_DECL.sub(lambda m: "" if same.get(m.group("name")) == _squeeze(m.group(0)) else m.group(0),
                               tests)
    real_std = same.get("std") == _squeeze('const std = @import("std");')
    need_std = not real_std and "std" not in top_level_names(tests) and _USES_STD.search(tests)
    header = 'const std = @import("std");\n' if need_std else ""
    return f"{solution.rstrip()}\n\n// ---- hidden tests ----\n{header}{tests.strip()}\n"


def _squeeze(decl: str) -> str:
    """A declaration without `pub` and whitespace, to compare two spellings of one line."""
    return re.sub(r"\s+", "", re.sub(r"^\s*pub\s+", "", decl))


def plan(pair: Pair) -> list[Check]:
    """The checks of one pair (see the module docstring)."""
    k = solution_index(pair) if pair.tests else None
    if k is None:
        mode = mode_for(pair)
        return [Check(pair.id, "block", BlockInput(id=f"{pair.id}#{j}", code=code, expect=pair.expect, mode=mode))
                for j, code in enumerate(blocks_to_check(pair))]
    assert pair.tests is not None
    blocks = pair.code_blocks()
    solution = blocks[k]
    checks = [Check(pair.id, "block", BlockInput(id=f"{pair.id}#{j}", code=code, expect=pair.expect))
              for j, code in enumerate(blocks) if j != k or pair.expect is not None]
    hidden = with_tests(solution, pair.tests)
    bare = strip_tests(solution)
    stub, hollow = with_tests(stub_bodies(bare), pair.tests), with_tests(hollow_bodies(bare), pair.tests)
    return [*checks, Check(pair.id, "hidden", BlockInput(id=f"{pair.id}#hidden", code=hidden, mode="test")),
            Check(pair.id, "stub", BlockInput(id=f"{pair.id}#stub", code=stub, mode="test")),
            Check(pair.id, "hollow", BlockInput(id=f"{pair.id}#hollow", code=hollow, mode="test"))]


# ---------------------------------------------------------------- what the verdicts make of the pair


def evidence_of(verdict: Verdict, pair: Pair) -> Evidence:
    """One passing check's evidence. A pair claiming a failure proves what the compiler or the run showed: an
    expected compile error is `compiled`, an expected run-time failure `ran` (a failing test is not `tested`)."""
    if not verdict.passed:
        return "none"
    if pair.expect is not None and pair.expect.outcome != "ok":
        return "compiled" if verdict.stage == "compile" else "ran"
    return verdict.evidence


def weakest(levels: Sequence[Evidence]) -> Evidence:
    return min(levels, key=EVIDENCE_RANK.__getitem__) if levels else "none"


def vacuity_of(stub: Verdict, hollow: Verdict | None = None) -> Vacuity:
    """Tests that pass on the stubbed solution are vacuous, and so are tests that pass on the hollow one (every
    function returns `undefined`: they call the solution without checking it); tests that failed (or panicked,
    or hung) on the stub, and did not pass on the hollow solution, are not. A stub that did not compile proves
    nothing either way; a hollow solution that did not compile (an `undefined` the code needs at comptime) leaves
    the stub to decide."""
    if stub.verdict == "ok":
        return "vacuous"
    if stub.verdict in _STUB_FAILED and stub.stage != "compile":
        return "vacuous" if hollow is not None and hollow.verdict == "ok" else "non_vacuous"
    return "inconclusive"


def judge_pair(pair: Pair, verdicts: dict[Role, list[Verdict]], *, can_repair: bool) -> PairCheck:
    """The pair's status, representative verdict and evidence from its checks' verdicts (see module docstring)."""
    checked = [*verdicts.get("block", []), *verdicts.get("hidden", [])]
    stub: Verdict | None = next(iter(verdicts.get("stub") or []), None)
    hollow: Verdict | None = next(iter(verdicts.get("hollow") or []), None)
    infra = next((v for v in [*checked, stub, hollow] if v is not None and v.verdict == "infra_error"), None)
    if infra is not None:
        return PairCheck("infra", infra, "none")
    bad = next((v for v in checked if not v.passed), None)
    if bad is not None:
        return PairCheck("failing", bad, "none")
    if not checked:
        return PairCheck("accepted", None, "conceptual")
    evidence = weakest([evidence_of(v, pair) for v in checked])
    representative = (verdicts.get("hidden") or checked)[-1]
    if verdicts.get("hidden") and not all_hidden_passed(pair, representative):
        why = "not every declared test reported that it passed (skipped, never run, or no per-test report)"
        return PairCheck("accepted", representative, weakest([evidence, "ran"]), {"status": "unproven", "demoted": why})
    if stub is None:
        return PairCheck("accepted", representative, evidence)
    vacuity: dict[str, Any] = {"status": vacuity_of(stub, hollow), "stub_verdict": stub.verdict,
                               "stub_tests": _counts(stub), "hollow_verdict": hollow.verdict if hollow else None}
    if vacuity["status"] == "non_vacuous" and _READS_SOURCE.search(pair.tests or ""):
        vacuity["status"] = "inconclusive"  # tests that read the source can tell a stub from the solution
    if vacuity["status"] == "non_vacuous":
        return PairCheck("accepted", representative, evidence, vacuity)
    if vacuity["status"] == "vacuous" and can_repair:
        return PairCheck("failing", representative, "none", vacuity)
    vacuity["demoted"] = _why_vacuous(vacuity) if vacuity["status"] == "vacuous" else (
        "the hidden tests read source files (@embedFile/@src), so failing on the stub proves nothing"
        if _READS_SOURCE.search(pair.tests or "") else
        "the stubbed solution does not compile, so the tests' strength is unknown")
    return PairCheck("accepted", representative, weakest([evidence, "ran"]), vacuity)


def _why_vacuous(vacuity: dict[str, Any]) -> str:
    if vacuity["stub_verdict"] == "ok":
        return "hidden tests pass on a stubbed solution"
    return "hidden tests pass on a solution whose functions compute nothing (they do not check its results)"


def all_hidden_passed(pair: Pair, verdict: Verdict) -> bool:
    """The test runner reported every test of the file passed: none skipped, and as many passes as the solution
    and the hidden tests declare together (so the solution's own tests cannot stand in for a hidden test that
    never ran, such as one nested in a container nothing refers to)."""
    t = verdict.tests
    k = solution_index(pair)
    solution = pair.code_blocks()[k] if k is not None else ""
    declared = len(declared_test_names(solution)) + len(declared_test_names(pair.tests or ""))
    return t is not None and t.skipped == 0 and t.passed >= declared


def _counts(v: Verdict) -> dict[str, int] | None:
    return None if v.tests is None else {"passed": v.tests.passed, "failed": v.tests.failed}


def apply(pair: Pair, result: PairCheck) -> None:
    """Record a check's outcome on the pair: verdict, evidence, vacuity (meta) and the last attempt's verdict."""
    pair.verdict, pair.evidence = result.verdict, result.evidence
    if result.vacuity is None:
        pair.meta.pop("vacuity", None)
    else:
        pair.meta["vacuity"] = result.vacuity
    if pair.attempts:
        pair.attempts[-1].verdict = result.verdict.verdict if result.verdict else None


async def check_pairs(pairs: Sequence[Pair], validate_many: ValidateMany, *, can_repair: bool) -> CheckRound:
    """Check every pair (all blocks in one validator call), record each outcome on its pair (``apply``) and
    split the ids: accepted, failing (to repair, or to reject), and rejected for an executor fault."""
    checks = [c for p in pairs for c in plan(p)]
    verdicts = await validate_many([c.block for c in checks]) if checks else []
    by_pair: dict[str, dict[Role, list[Verdict]]] = {}
    for c, v in zip(checks, verdicts, strict=True):
        by_pair.setdefault(c.pair_id, {}).setdefault(c.role, []).append(v)
    out = CheckRound()
    for p in pairs:
        result = judge_pair(p, by_pair.get(p.id, {}), can_repair=can_repair)
        apply(p, result)
        if result.status == "accepted":
            out.accepted.append(p.id)
        elif result.status == "failing":
            out.failing.append(p.id)
        else:
            out.rejected.append({"pair_id": p.id, "reason": "infra_error"})
    return out


def rejection_reason(pair: Pair) -> str:
    """Why a pair that still fails after its repairs is rejected."""
    if (pair.meta.get("vacuity") or {}).get("status") == "vacuous" and pair.evidence == "none":
        return "vacuous_tests"
    return pair.verdict.verdict if pair.verdict else "no_verdict"


# ---------------------------------------------------------------- repair


def output_feedback(verdict: Verdict) -> str:
    """The compiler / test / program output a repair is shown, trimmed (first errors first)."""
    text = verdict.stderr.strip()
    if verdict.verdict == "wrong_output":
        text = f"{text}\nThe program printed:\n{verdict.stdout}".strip()
    if verdict.verdict == "timeout":
        text = text or "The program did not finish in time (infinite loop or waiting for input?)."
    if len(text) > MAX_FEEDBACK_CHARS:
        text = text[:MAX_FEEDBACK_CHARS].rsplit("\n", 1)[0] + "\n... (output trimmed)"
    return text


def failed_hidden_tests(pair: Pair, verdict: Verdict) -> tuple[list[str], str | None]:
    """(hidden tests the runner reported failed, the hidden test running when the binary stopped)."""
    if not pair.tests or verdict.tests is None:
        return [], None
    hidden = declared_test_names(pair.tests)

    def ours(reported: str) -> str | None:
        return next((h for h in hidden if h and (reported == h or reported.endswith(f"test.{h}"))), None)

    failed = [h for h in (ours(n) for n in verdict.tests.failed_names) if h]
    return failed, ours(verdict.tests.unfinished) if verdict.tests.unfinished else None


def repair_request(pair: Pair) -> RepairRequest:
    """What the repair of a failing pair is asked to fix: vacuous tests, or the verdict with its output and
    the hidden tests that failed."""
    vacuity = pair.meta.get("vacuity") or {}
    if vacuity.get("status") == "vacuous":
        hollow = vacuity.get("stub_verdict") != "ok" and vacuity.get("hollow_verdict") == "ok"  # not checked
        return RepairRequest("vacuous_tests", HOLLOW_FEEDBACK if hollow else VACUOUS_FEEDBACK, rewrite_tests=True)
    assert pair.verdict is not None
    failed, stopped = failed_hidden_tests(pair, pair.verdict)
    lines = [f'Hidden test "{n}" failed.' for n in failed]
    if stopped:
        lines.append(f'The test binary stopped during hidden test "{stopped}" (a panic, a crash or an exit).')
    text = output_feedback(pair.verdict)
    return RepairRequest(pair.verdict.verdict, "\n".join([*lines, text]).strip() if lines else text)


def code_hash(pair: Pair) -> str | None:
    """Hash of the pair's code and hidden tests (what a repair changes)."""
    blocks = pair.code_blocks()
    if not blocks:
        return None
    return sha256("\n".join(blocks) + (f"\n{pair.tests}" if pair.tests else ""))


def usage_tokens(pair: Pair) -> dict[str, int]:
    u = pair.meta.get("usage") or {}
    return {"input": u.get("input", 0), "output": u.get("output", 0)}


@dataclass
class RepairStep:
    """One failing pair's repair: the new version to store (None: nothing new), whether it goes back to
    validation, why it is rejected instead, and the tokens spent."""

    pair: Pair | None
    pending: bool
    rejected: str | None
    tokens: dict[str, int]


def already_repaired(pair: Pair, attempt: int) -> bool:
    """Repaired in this round by an attempt of the repair node that did not finish (a retried transient error,
    a killed process): its answer is kept, the model is not asked again."""
    return bool(pair.attempts) and pair.attempts[-1].n == attempt


async def repair_one(old: Pair, generator: PairGenerator, attempt: int) -> RepairStep:
    """Ask ``generator`` to repair ``old`` (round ``attempt``). Endpoint failures propagate (the graph decides
    whether the section failed); a repair the model botched is a rejection with its reason."""
    if already_repaired(old, attempt):
        return RepairStep(None, True, None, usage_tokens(old))
    request = repair_request(old)
    result = await generator.repair(old, request)
    tokens = {"input": result.usage.input, "output": result.usage.output}
    if result.pair is None:
        reason = f"repair_failed: {result.error}" if result.error else rejection_reason(old)
        return RepairStep(None, False, reason, tokens)
    new = result.pair
    new.id = old.id
    new.attempts = [*old.attempts, Attempt(n=attempt, code_hash=code_hash(new), feedback=request.feedback)]
    return RepairStep(new, True, None, tokens)
