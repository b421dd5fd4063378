"""The before/after evaluator: every model answers every task, the answers' code goes through the validator
(sandboxed Zig) with the task's hidden checks, and we score compile rate, pass@1 and unbiased pass@k.

``evaluate(tasks, {label: spec}, out_dir, samples=..., max_tasks=...)`` writes ``results.json``,
``answers.jsonl`` and ``report.md`` with its two plots (``doctune.trainer.report``). How an answer becomes the
validated program (which fenced block wins, hidden tests, no self-made tests) is in ``doctune.trainer.tasks``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from doctune.schemas import Expect, Verdict
from doctune.settings import ValidatorSettings
from doctune.trainer.tasks import EvalTask, Program, build_program

console = Console(stderr=True)


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


class TaskResult(BaseModel):
    compiled: bool
    passed: bool
    error: str | None = None
    samples: int = 1
    samples_passed: int = 0


class EvalResults(BaseModel):
    models: dict[str, ModelScore]
    tasks: list[dict[str, Any]]
    samples: int
    specs: dict[str, str]

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def generate_all(tasks: Sequence[EvalTask], models: dict[str, str], *, samples: int, max_new_tokens: int,
                 batch_size: int = 16) -> dict[str, list[list[str]]]:
    """label -> per task -> answers. Models are loaded one at a time (memory)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from doctune.trainer.generate import make_generator, parse_spec

    specs = {label: parse_spec(label, spec) for label, spec in models.items()}  # fail fast on bad specs
    prompts = [t.prompt for t in tasks]
    answers: dict[str, list[list[str]]] = {}
    with Progress(TextColumn("[bold]generate {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console) as progress:
        for label, spec in specs.items():
            bar = progress.add_task(label, total=len(prompts))
            gen = make_generator(spec, max_new_tokens=max_new_tokens, batch_size=batch_size)
            try:
                answers[label] = gen.generate(prompts, samples, on_batch=lambda k, b=bar: progress.advance(b, k))
            finally:
                gen.close()
    return answers


async def validate_answers(
    tasks: Sequence[EvalTask], answers: dict[str, list[list[str]]], settings: ValidatorSettings
) -> dict[str, list[list[tuple[Program, Verdict | None]]]]:
    """Build each answer's program and validate all of them in one ``validate_many`` (batched, cached)."""
    from doctune.agents.validator import BlockInput, Validator

    built: dict[str, list[list[tuple[Program, Verdict | None]]]] = {}
    blocks: list[BlockInput] = []
    where: list[tuple[str, int, int]] = []
    for label, per_task in answers.items():
        built[label] = []
        for ti, (task, outs) in enumerate(zip(tasks, per_task, strict=True)):
            row: list[tuple[Program, Verdict | None]] = []
            for si, ans in enumerate(outs):
                prog = build_program(task, ans)
                row.append((prog, None))
                if prog.code is not None:
                    expect = Expect(stdout=task.expect_stdout) if task.mode == "run" else Expect()
                    blocks.append(BlockInput(id=f"{label}/{task.id}/{si}", code=prog.code, mode=task.mode,
                                             expect=expect))
                    where.append((label, ti, si))
            built[label].append(row)
    validator = Validator(settings)
    try:
        verdicts = await validator.validate_many(blocks)
    finally:
        await validator.aclose()
    for (label, ti, si), v in zip(where, verdicts, strict=True):
        built[label][ti][si] = (built[label][ti][si][0], v)
    return built


def _error(prog: Program, v: Verdict | None) -> str | None:
    if prog.error:
        return prog.error
    if v is None or v.passed:
        return None
    detail = (v.stderr or v.stdout).strip().splitlines()
    return (f"{v.verdict}: " + " | ".join(detail[:3]))[:400]


def score(tasks: Sequence[EvalTask], built: dict[str, list[list[tuple[Program, Verdict | None]]]],
          samples: int, specs: dict[str, str]) -> EvalResults:
    rows: list[dict[str, Any]] = [
        {"id": t.id, "source": t.source, "topic": t.topic, "mode": t.mode, "check": t.check, "results": {}}
        for t in tasks
    ]
    models: dict[str, ModelScore] = {}
    for label, per_task in built.items():
        compiled = passed = 0
        p1: list[float] = []
        pk: list[float] = []
        for row, outs in zip(rows, per_task, strict=True):
            oks = [v is not None and v.passed for _, v in outs]
            comp = [v is not None and v.verdict not in ("compile_error", "infra_error", "unsupported")
                    for _, v in outs]
            res = TaskResult(compiled=comp[0], passed=oks[0], error=_error(*outs[0]), samples=len(outs),
                             samples_passed=sum(oks))
            row["results"][label] = res.model_dump(exclude_none=True)
            compiled += comp[0]
            passed += oks[0]
            p1.append(sum(oks) / len(oks))
            pk.append(pass_at_k(len(oks), sum(oks), samples))
        n = len(per_task)
        models[label] = ModelScore(
            n=n, compiled=compiled, passed=passed, compile_rate=round(compiled / n, 4) if n else 0.0,
            **{"pass@1": round(sum(p1) / n, 4) if n else 0.0,
               "pass@k": round(sum(pk) / n, 4) if n and samples > 1 else None},
            k=samples,
        )
    return EvalResults(models=models, tasks=rows, samples=samples, specs=specs)


async def calibrate(tasks: list[EvalTask], settings: ValidatorSettings) -> list[EvalTask]:
    """Dataset run-mode tasks get their expected stdout from running the reference; failing references go."""
    from doctune.agents.validator import Validator

    todo = [t for t in tasks if t.mode == "run" and t.expect_stdout is None and t.reference]
    if not todo:
        return tasks
    v = Validator(settings)
    try:
        verdicts = await asyncio.gather(*(v.validate(t.reference or "", mode="run") for t in todo))
    finally:
        await v.aclose()
    drop = set()
    for t, verdict in zip(todo, verdicts, strict=True):
        if verdict.passed:
            t.expect_stdout = verdict.stdout
        else:
            drop.add(t.id)
    if drop:
        console.print(f"[yellow]note:[/] {len(drop)} dataset task(s) dropped: their reference no longer runs")
    return [t for t in tasks if t.id not in drop]


def evaluate(tasks: Sequence[EvalTask], models: dict[str, str], out_dir: Path | str, **kw: Any) -> EvalResults:
    """Synchronous ``evaluate_async`` (for the CLI; do not call from a running event loop)."""
    return asyncio.run(evaluate_async(tasks, models, out_dir, **kw))


async def evaluate_async(
    tasks: Sequence[EvalTask],
    models: dict[str, str],
    out_dir: Path | str,
    *,
    samples: int = 1,
    max_tasks: int | None = None,
    max_new_tokens: int = 512,
    validator: ValidatorSettings | None = None,
    loss_log: Path | None = None,
    batch_size: int = 16,
) -> EvalResults:
    """Run the whole evaluation and write results.json, answers.jsonl, report.md + plots into ``out_dir``.
    Generation runs in a worker thread so an event loop (the graph's) stays responsive."""
    from doctune.trainer.report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = validator or ValidatorSettings()
    chosen = await calibrate(select_tasks([t.model_copy() for t in tasks], max_tasks), settings)
    answers = await asyncio.to_thread(
        generate_all, chosen, models, samples=samples, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    n_answers = sum(len(a) for per in answers.values() for a in per)
    console.print(f"validating {n_answers} answers with Zig ...")
    built = await validate_answers(chosen, answers, settings)
    results = score(chosen, built, samples, dict(models))
    (out / "results.json").write_text(json.dumps(results.dump(), indent=2) + "\n")
    with (out / "answers.jsonl").open("w", encoding="utf-8") as f:
        for ti, t in enumerate(chosen):
            f.write(json.dumps({"id": t.id, "prompt": t.prompt,
                                "answers": {label: answers[label][ti] for label in answers}}) + "\n")
    write_report(results, chosen, answers, out, loss_log=loss_log or find_loss_log(models))
    return results


def select_tasks(tasks: list[EvalTask], max_tasks: int | None) -> list[EvalTask]:
    """All tasks, or ``max_tasks`` of them: sources alternate (dataset split / task files) and, within a source,
    topics take turns, so a small slice stays diverse. Picked tasks keep their original order."""
    if not max_tasks or max_tasks >= len(tasks):
        return tasks
    by_source: dict[str, dict[str, list[EvalTask]]] = {}
    for t in tasks:
        by_source.setdefault(t.source, {}).setdefault(t.topic or "", []).append(t)
    streams = [_round_robin(list(topics.values())) for topics in by_source.values()]
    picked = _round_robin(streams)[:max_tasks]
    order = {t.id: i for i, t in enumerate(tasks)}
    return sorted(picked, key=lambda t: order[t.id])


def _round_robin(queues: list[list[EvalTask]]) -> list[EvalTask]:
    out: list[EvalTask] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out


def find_loss_log(models: dict[str, str]) -> Path | None:
    """The training loss log next to an evaluated adapter (``<train out>/loss.jsonl``), if any."""
    for spec in models.values():
        for cand in (Path(spec) / "loss.jsonl", Path(spec).parent / "loss.jsonl"):
            if not spec.startswith("openai:") and cand.is_file():
                return cand
    return None
