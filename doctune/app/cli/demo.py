"""`doctune demo`: the main job on the shipped docs, offline, sized for a 2-core CPU, and what each stage did.

The input is two shipped documents: a short tour of Zig 0.14 whose examples all behave as annotated, and a page
of notes from an older tutorial whose examples no longer compile with 0.14 -- so the demo shows pairs accepted,
expected failures confirmed, and stale code rejected with the compiler's own message. With ``--train`` (the
default) it trains SmolLM2-135M with LoRA on the CPU and compares base vs tuned on the simplest eval tasks.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import typer

from doctune.app.cli.common import console, settings_from

DEMO_DOCS = ("sample", "stale")
DEMO_EVAL_TASKS = 6  # the simplest shipped tasks (shortest reference solution); base and tuned answer each
DEMO_MAX_NEW_TOKENS = 192  # the simple tasks' answers are short programs
DEMO_TRAIN_STEPS = 8  # x 2 sequences of <= 512 tokens: the whole demo stays within ~10 min on 2 cores
DEMO_MAX_SEQ_LENGTH = 512


def fit_torch_threads() -> str:
    """Torch threads = the cores nobody else is using (at least 1): on a 2-core box already busy, two threads
    spin against the other processes and run several times slower than one. Returns what was decided."""
    import os

    try:
        import torch
    except ImportError:
        return "torch not installed"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    threads = max(1, min(cores, round(cores - load)))
    torch.set_num_threads(threads)
    return f"{threads} torch thread(s) ({cores} cores, load {load:.1f})"


def simplest_tasks(n: int, files: list[Path] | None = None) -> list[Any]:
    """The ``n`` eval tasks with the shortest reference solution (ties: id): a stated notion of 'simplest'."""
    from doctune.evals import task_files
    from doctune.trainer.tasks import load_tasks

    tasks = [t for t in load_tasks(task_files(files or [])) if t.reference]
    return sorted(tasks, key=lambda t: (len(t.reference or ""), t.id))[:n]


def _write_tasks(out_dir: Path, n: int) -> Path:
    path = out_dir / "demo-tasks.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [t.model_dump(exclude={"source", "check"}, exclude_none=True) for t in simplest_tasks(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def walkthrough(summary: Any, out_dir: Path) -> list[str]:
    """Plain lines saying what each stage did, read back from the run's own outputs."""
    accepted, rejected = _rows(out_dir / "pairs.jsonl"), _rows(out_dir / "rejected.jsonl")
    lines = [f"split:     {summary.sections_total} sections from {len(DEMO_DOCS)} documents",
             f"generated: {summary.generated} pairs from the docs' own examples (offline, no LLM)"]
    verdicts = Counter(f"{r['verdict']['verdict']}" + (" (as the doc says)" if r["verdict"]["verdict"] != "ok"
                                                        else "") for r in accepted)
    verdicts.update(f"{r['reason']} (rejected)" for r in rejected)
    lines.append("validated: " + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())))
    repaired = [r for r in accepted if r.get("repairs", 0) > 0]  # pairs.jsonl: repairs = attempts - 1
    if repaired:
        lines.append(f"repaired:  {len(repaired)} pair(s) passed after a repair, e.g. {repaired[0]['heading_path']}")
    else:
        lines.append("repaired:  none -- the offline generator cannot rewrite code; with `--generator llm` a "
                     "failing pair goes back to the model with the compiler's message (generator.max_repairs)")
    if rejected:
        r = rejected[0]
        err = next((ln for ln in r["verdict"]["stderr"].splitlines() if "error:" in ln), r["verdict"]["stderr"])
        lines.append(f"rejected:  \"{r['heading_path']}\" -- {r['reason']}: {err.strip()}")
    if summary.train:
        t = summary.train
        lines.append(f"trained:   {t['steps']} LoRA steps on {t['base_model'].rsplit('/', 1)[-1]}, loss "
                     f"{_num(t.get('first_loss'))} -> {_num(t.get('final_loss'))}, {t['runtime_s']:.0f} s")
    if summary.evaluation.get("models"):
        e = summary.evaluation
        scores = "; ".join(f"{m} compile rate {s['compile_rate']:.2f}, pass@1 {s['pass@1']:.2f}"
                           for m, s in e["models"].items())
        lines.append(f"evaluated: {e['tasks']} tasks: {scores} -> {e['report']}")
    return lines


def _num(x: float | None) -> str:
    return "?" if x is None else f"{x:.3f}"


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out_dir: Path = typer.Option(Path("out/demo"), "--out", "-o", help="Output directory."),
        train: bool = typer.Option(True, "--train/--no-train", help="CPU train + before/after eval."),
        unsafe_no_sandbox: bool = typer.Option(False, "--unsafe-no-sandbox", help="Run code without bwrap."),
    ) -> None:
        """The main job on the shipped Zig docs, offline (no API key, no GPU), then what each stage did."""
        from doctune.app.cli.run import interruptible, print_summary
        from doctune.app.runner import run
        from doctune.core import corpus

        overrides: dict[str, Any] = {
            "generator": {"kind": "doc-examples"},
            "validator": {"unsafe_no_sandbox": True, "sandbox": "none"} if unsafe_no_sandbox else {},
            "train": {"enabled": train},
        }
        if train:
            overrides["train"].update(preset="cpu-smollm2", max_steps=DEMO_TRAIN_STEPS,
                                      overrides={"max_seq_length": DEMO_MAX_SEQ_LENGTH})
            overrides["eval"] = {"tasks": [_write_tasks(out_dir, DEMO_EVAL_TASKS)], "max_tasks": DEMO_EVAL_TASKS,
                                 "max_new_tokens": DEMO_MAX_NEW_TOKENS}
        settings = settings_from(None, **overrides)
        docs = [str(corpus.path(name)) for name in DEMO_DOCS]
        console.print(f"[bold]doctune demo[/]: {', '.join(Path(d).name for d in docs)} -> {out_dir}")
        if train:
            console.print(f"training and evaluation on {fit_torch_threads()}", highlight=False)
        summary = interruptible(lambda: run(docs, out_dir, settings, show_progress=True))
        print_summary(summary, out_dir)
        for line in walkthrough(summary, out_dir):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
