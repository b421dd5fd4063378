"""Scoring: whether one answer passed (decided from channels the answer cannot forge), and the aggregates.

An answer passes only when its program was built, the validator's verdict passed, and, for test mode, every
deciding test reported that it passed: the validator's per-test report (``Verdict.tests``: all hidden tests
passed, none failed, skipped or left unfinished) or, when the validator gives none, each test's nonce marker
(``doctune.trainer.tasks.marker``). The exit status alone never passes a test-mode answer: a binary that exits 0
early, or a test that skips itself, lacks the reports.

The headline (``models``) counts only tasks checked by hidden tests or an expected stdout; tasks checked by the
answer's own tests or its exit status are scored apart (``weakly_checked``). Answers cut at the token budget are
counted per task and per model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from doctune.core.schemas import Verdict
from doctune.trainer.tasks import EvalTask, Program, marker

HEADLINE = "tasks checked by hidden tests or an expected stdout"
WEAK = "tasks checked only by the answer's own tests or its exit status (not in the headline pass@1)"
_NOT_COMPILED = ("compile_error", "infra_error", "unsupported")


class ModelScore(BaseModel):
    """Aggregate over tasks for one model (counts use each task's first sample)."""

    model_config = ConfigDict(populate_by_name=True)

    n: int
    compiled: int
    passed: int
    compile_rate: float
    pass_at_1: float = Field(alias="pass@1", description="Mean over tasks of passed samples / samples.")
    pass_at_k: float | None = Field(None, alias="pass@k", description="Unbiased pass@k with k = samples.")
    k: int = 1
    truncated: int = Field(0, description="Answers (all samples) cut at the token budget.")
    truncated_tasks: list[str] = Field(default_factory=list, description="Tasks with a cut answer.")


class TaskResult(BaseModel):
    compiled: bool
    passed: bool
    error: str | None = None
    samples: int = 1
    samples_passed: int = 0
    truncated: int = Field(0, description="Samples cut at the token budget.")


class Judged(BaseModel):
    """One answer's outcome."""

    compiled: bool
    passed: bool
    error: str | None = None
    truncated: bool = False


class EvalResults(BaseModel):
    headline: str = HEADLINE
    models: dict[str, ModelScore]
    weakly_checked: dict[str, Any] = Field(default_factory=dict)
    tasks: list[dict[str, Any]]
    samples: int
    specs: dict[str, str]
    max_new_tokens: int | None = None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def judge(task: EvalTask, prog: Program, v: Verdict | None, nonce: str | None) -> Judged:
    """Whether one answer passed its task, and why not."""
    if prog.error or prog.code is None:
        return Judged(compiled=False, passed=False, error=prog.error or "no code")
    if v is None:
        return Judged(compiled=False, passed=False, error="not validated")
    compiled = v.verdict not in _NOT_COMPILED
    if not v.passed:
        why = report_problem(prog.tests, v, nonce) if task.mode == "test" and v.tests is not None else None
        return Judged(compiled=compiled, passed=False, error=(why or _verdict_error(v))[:400])
    if task.mode == "test":
        why = report_problem(prog.tests, v, nonce)
        if why is not None:
            return Judged(compiled=True, passed=False, error=why[:400])
    return Judged(compiled=compiled, passed=True)


def report_problem(expected: int, v: Verdict, nonce: str | None) -> str | None:
    """Why a test-mode verdict does not show all ``expected`` tests passing (None: it does)."""
    t = v.tests
    if t is not None:
        if t.unfinished is not None:
            return f"test_failure: the binary ended during test {t.unfinished!r} before reporting"
        if t.failed or t.skipped or t.passed != expected:
            names = f" ({', '.join(t.failed_names[:3])})" if t.failed_names else ""
            return (f"test_failure: {t.passed}/{expected} tests passed, {t.failed} failed{names}, "
                    f"{t.skipped} skipped (a skipped test is a failure)")
        return None
    if nonce is None or expected == 0:
        return "no per-test report: the exit status alone does not pass a test"
    output = v.stderr + v.stdout
    missing = [k for k in range(expected) if marker(nonce, k) not in output]
    if missing:
        cut = " (output over the cap)" if "more bytes trimmed]" in output else ""
        return (f"test_failure: {len(missing)}/{expected} tests never returned (first: #{missing[0]}): the binary "
                f"ended early, or a test failed or skipped itself{cut}")
    return None


def _verdict_error(v: Verdict) -> str:
    detail = (v.stderr or v.stdout).strip().splitlines()
    return (f"{v.verdict}: " + " | ".join(detail[:3]))[:400]


def task_result(outs: Sequence[Judged]) -> TaskResult:
    first = outs[0]
    return TaskResult(compiled=first.compiled, passed=first.passed, error=None if first.passed else first.error,
                      samples=len(outs), samples_passed=sum(o.passed for o in outs),
                      truncated=sum(o.truncated for o in outs))


def model_score(ids: Sequence[str], per_task: Sequence[Sequence[Judged]], samples: int) -> ModelScore:
    """Aggregate of one model over some tasks (``ids`` and ``per_task`` in the same order)."""
    n = len(per_task)
    first = [outs[0] for outs in per_task]
    p1 = [sum(o.passed for o in outs) / len(outs) for outs in per_task]
    pk = [pass_at_k(len(outs), sum(o.passed for o in outs), samples) for outs in per_task]
    compiled = sum(o.compiled for o in first)
    return ModelScore(
        n=n, compiled=compiled, passed=sum(o.passed for o in first),
        compile_rate=round(compiled / n, 4) if n else 0.0,
        **{"pass@1": round(sum(p1) / n, 4) if n else 0.0,
           "pass@k": round(sum(pk) / n, 4) if n and samples > 1 else None},
        k=samples, truncated=sum(o.truncated for outs in per_task for o in outs),
        truncated_tasks=[tid for tid, outs in zip(ids, per_task, strict=True) if any(o.truncated for o in outs)],
    )


def score(tasks: Sequence[EvalTask], judged: dict[str, list[list[Judged]]], samples: int,
          specs: dict[str, str], max_new_tokens: int | None = None) -> EvalResults:
    """results.json's content: headline scores, weakly checked tasks apart, one row per task."""
    rows: list[dict[str, Any]] = [
        {"id": t.id, "source": t.source, "topic": t.topic, "mode": t.mode, "check": t.check,
         "checked_by": t.checked_by, "headline": t.headline, "results": {}}
        for t in tasks
    ]
    models: dict[str, ModelScore] = {}
    weak: dict[str, ModelScore] = {}
    for label, per_task in judged.items():
        for row, outs in zip(rows, per_task, strict=True):
            row["results"][label] = task_result(outs).model_dump(exclude_none=True)
        for into, want in ((models, True), (weak, False)):
            sel = [(t.id, outs) for t, outs in zip(tasks, per_task, strict=True) if t.headline is want]
            if want or sel:
                into[label] = model_score([i for i, _ in sel], [o for _, o in sel], samples)
    apart = ({"what": WEAK, "models": {k: s.model_dump(mode="json", by_alias=True) for k, s in weak.items()}}
             if weak else {})
    return EvalResults(models=models, weakly_checked=apart, tasks=rows, samples=samples, specs=specs,
                       max_new_tokens=max_new_tokens)

