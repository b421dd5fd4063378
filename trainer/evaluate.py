"""The before/after evaluator: every model answers every task, the answers' code goes through the validator
(sandboxed Zig) with the task's hidden checks, and we score compile rate, pass@1 and unbiased pass@k.

``evaluate(tasks, {label: spec}, out_dir, samples=..., max_tasks=...)`` writes ``results.json``,
``answers.jsonl`` and ``report.md`` with its two plots (``doctune.trainer.report``). How an answer becomes the
validated program (which fenced block wins, hidden tests, no self-made tests) is in ``doctune.trainer.tasks``;
how a verdict becomes a pass (per-test reports, never the exit status alone) in ``doctune.trainer.scoring``.

Isolation: one answer, one block, its own compile and its own process. Models are validated one after the other,
each with its own validator, and batching is off for eval (``EVAL_VALIDATOR``): no answer of another task or
another model can end, skip or otherwise decide the process that judges this one.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from doctune.core.schemas import CodeCheck, Expect, Verdict
from doctune.core.settings import ValidatorSettings
from doctune.trainer.generate import DEFAULT_MAX_NEW_TOKENS, Complete
from doctune.trainer.scoring import EvalResults, Judged, ModelScore, TaskResult, judge, pass_at_k, score
from doctune.trainer.specs import Generation
from doctune.trainer.tasks import EvalTask, Program, build_program

__all__ = ["EvalResults", "ModelScore", "TaskResult", "evaluate", "evaluate_async", "pass_at_k"]

console = Console(stderr=True)
EVAL_VALIDATOR = {"batch_tests": False, "batch_programs": False}  # each answer alone (see the module docstring)
Answers = dict[str, list[list[Generation]]]


class Checker(Protocol):
    """What judges one program (the validator, handed in by the graph or the CLI: the trainer floor never imports
    it). ``doctune.agents.validator.Validator`` is one: ``make_checker=Validator``."""

    async def check(self, item: CodeCheck) -> Verdict: ...
    async def aclose(self) -> None: ...


MakeChecker = Callable[[ValidatorSettings], Checker]


def generate_all(tasks: Sequence[EvalTask], models: dict[str, str], *, samples: int, max_new_tokens: int,
                 batch_size: int = 16, complete: Complete | None = None, cache_dir: Path | None = None) -> Answers:
    """label -> per task -> answers. Models are loaded one at a time (memory); endpoints are asked through
    ``complete`` (see ``doctune.trainer.generate``); ``cache_dir`` is doctune's cache (the converted SmolLM2)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from doctune.trainer.generate import make_generator, parse_spec

    specs = {label: parse_spec(label, spec, cache_dir) for label, spec in models.items()}  # fail fast on bad specs
    prompts = [t.prompt for t in tasks]
    answers: Answers = {}
    with Progress(TextColumn("[bold]generate {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console) as progress:
        for label, spec in specs.items():
            bar = progress.add_task(label, total=len(prompts))
            gen = make_generator(spec, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                 task_ids=[t.id for t in tasks], complete=complete)
            try:
                answers[label] = gen.generate(prompts, samples, on_batch=lambda k, b=bar: progress.advance(b, k))
            finally:
                gen.close()
    return answers


async def validate_answers(
    tasks: Sequence[EvalTask], answers: Answers, settings: ValidatorSettings, nonce: str,
    *, make_checker: MakeChecker,
) -> dict[str, list[list[Judged]]]:
    """Build and judge every answer. Each model gets its own checker, after the previous one is closed; each
    answer is checked alone (``check``: no batch)."""
    isolated = settings.model_copy(update=EVAL_VALIDATOR)
    judged: dict[str, list[list[Judged]]] = {}
    for label, per_task in answers.items():
        progs = [[build_program(t, g.text, nonce) for g in outs] for t, outs in zip(tasks, per_task, strict=True)]
        validator = make_checker(isolated)
        try:
            verdicts = await asyncio.gather(*(
                asyncio.gather(*(_validate_one(validator, t, p) for p in row)) for t, row in zip(tasks, progs, strict=True)
            ))
        finally:
            await validator.aclose()
        judged[label] = [
            [judge(t, p, v, nonce).model_copy(update={"truncated": g.truncated})
             for p, v, g in zip(row, vs, outs, strict=True)]
            for t, row, vs, outs in zip(tasks, progs, verdicts, per_task, strict=True)
        ]
    return judged


async def _validate_one(validator: Checker, task: EvalTask, prog: Program) -> Verdict | None:
    if prog.code is None:
        return None
    expect = Expect(stdout=task.expect_stdout) if task.mode == "run" else Expect()
    return await validator.check(CodeCheck(id=task.id, code=prog.code, mode=task.mode, expect=expect))


async def calibrate(tasks: list[EvalTask], settings: ValidatorSettings, make_checker: MakeChecker) -> list[EvalTask]:
    """Dataset run-mode tasks get their expected stdout from running the reference; failing references go."""
    todo = [t for t in tasks if t.mode == "run" and t.expect_stdout is None and t.reference]
    if not todo:
        return tasks
    v = make_checker(settings)
    try:
        verdicts = await asyncio.gather(*(v.check(CodeCheck(id=t.id, code=t.reference or "", mode="run"))
                                          for t in todo))
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
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    validator: ValidatorSettings | None = None,
    make_checker: MakeChecker,
    loss_log: Path | None = None,
    batch_size: int = 16,
    complete: Complete | None = None,
    cache_dir: Path | None = None,
) -> EvalResults:
    """Run the whole evaluation and write results.json, answers.jsonl, report.md + plots into ``out_dir``.
    Generation runs in a worker thread so an event loop (the graph's) stays responsive. ``make_checker`` builds
    the code checker from validator settings (``doctune.agents.validator.Validator``); ``complete`` asks the
    ``openai:`` models (the caller's client: key, timeout and retries from its settings); ``cache_dir`` is
    doctune's cache."""
    from doctune.trainer.report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = validator or ValidatorSettings()
    chosen = await calibrate(select_tasks([t.model_copy() for t in tasks], max_tasks), settings, make_checker)
    answers = await asyncio.to_thread(
        generate_all, chosen, models, samples=samples, max_new_tokens=max_new_tokens, batch_size=batch_size,
        complete=complete, cache_dir=cache_dir,
    )
    n_answers = sum(len(a) for per in answers.values() for a in per)
    console.print(f"validating {n_answers} answers with Zig, each alone ...")
    nonce = secrets.token_hex(8)  # chosen after the answers exist: no answer can print a test's marker
    judged = await validate_answers(chosen, answers, settings, nonce, make_checker=make_checker)
    results = score(chosen, judged, samples, dict(models), max_new_tokens=max_new_tokens)
    (out / "results.json").write_text(json.dumps(results.dump(), indent=2) + "\n")
    write_answers(out / "answers.jsonl", chosen, answers)
    write_report(results, chosen, answers, out, loss_log=loss_log or find_loss_log(models))
    return results


def write_answers(path: Path, tasks: Sequence[EvalTask], answers: Answers) -> None:
    """answers.jsonl: the prompt and every model's answers per task (re-scorable with ``answers:FILE#LABEL``)."""
    with path.open("w", encoding="utf-8") as f:
        for ti, t in enumerate(tasks):
            f.write(json.dumps({
                "id": t.id, "prompt": t.prompt,
                "answers": {label: [g.text for g in per[ti]] for label, per in answers.items()},
                "finish_reasons": {label: [g.finish_reason for g in per[ti]] for label, per in answers.items()},
            }) + "\n")


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
            if not spec.startswith(("openai:", "answers:")) and cand.is_file():
                return cand
    return None
