"""`doctune run` (the main job); `doctune demo` lives in demo.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from doctune.app.cli.common import console, out, settings_from
from doctune.graph.driver import RunSummary


def _overrides(
    generator: str | None,
    model: str | None,
    concurrency: int | None,
    executor: str | None,
    unsafe_no_sandbox: bool,
    train: bool | None,
    min_evidence: str | None = None,
) -> dict[str, Any]:
    return {
        "generator": {"kind": generator, "concurrency": concurrency},
        "llm": {"model": model},
        "validator": {
            "executor": executor,
            "unsafe_no_sandbox": True if unsafe_no_sandbox else None,
            "sandbox": "none" if unsafe_no_sandbox else None,
        },
        "train": {"enabled": train},
        "curator": {"min_evidence": min_evidence},
    }


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, section by section (``--set`` over the dedicated flags)."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def print_summary(s: RunSummary, out_dir: Path) -> None:
    t = Table(title=f"doctune run {s.run_id} ({s.status.replace('_', ' ')})", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("generator", s.generator)
    t.add_row("sections", f"{s.sections} processed of {s.sections_total} found")
    t.add_row("pairs generated", str(s.generated))
    t.add_row("accepted", f"[green]{s.accepted}[/]")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.reasons.items())) or "-"
    t.add_row("rejected", f"[red]{s.rejected}[/] ({reasons})")
    t.add_row("failed sections", str(s.failed_sections))
    t.add_row("accepted after k repairs", ", ".join(f"{k}: {v}" for k, v in s.repairs.items()) or "-")
    if s.tokens.get("input") or s.tokens.get("output"):
        t.add_row("tokens in/out", f"{s.tokens['input']} / {s.tokens['output']}")
    if s.export:
        t.add_row("dataset", f"{s.export['dataset_path']} (train {s.export['splits']['train']}, "
                  f"test {s.export['splits']['test']})")
        t.add_row("pairs / rejected", f"{s.export['pairs_path']} / {s.export['rejected_path']}")
    if s.evaluation.get("report"):
        t.add_row("eval report", str(s.evaluation["report"]))
    t.add_row("wall time", f"{s.wall_s:.1f} s")
    console.print(t)
    if s.failed_sections:
        console.print(f"[yellow]warning:[/] {s.failed_sections} section(s) failed (see `doctune status "
                      f"{out_dir}`); once the cause is fixed, `doctune retry {out_dir}` re-runs only those")


def _execute(docs: list[str], out_dir: Path, settings: Any, max_sections: int | None, as_json: bool) -> None:
    from doctune.app.runner import run

    summary = interruptible(lambda: run(docs, out_dir, settings, max_sections=max_sections, show_progress=True))
    print_summary(summary, out_dir)
    if as_json:
        out.print_json(json.dumps(summary.to_json(), default=str))


def interruptible(call: Any) -> Any:
    """Ctrl-C / SIGTERM: one line that says how to resume, exit 130 (the run's checkpoints are kept)."""
    from doctune.core.errors import Interrupted

    try:
        return call()
    except Interrupted as e:
        from rich.text import Text

        console.print(Text(str(e), style="yellow"), highlight=False, soft_wrap=True)
        # SystemExit, not typer.Exit: click (standalone_mode=False) would hand typer.Exit's code back as a
        # return value that the entry point does not use.
        sys.exit(130)


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        docs: list[str] = typer.Argument(..., help="Markdown/MDX files or folders."),
        out_dir: Path = typer.Option(..., "--out", "-o", help="Output directory (state, dataset, reports)."),
        max_sections: int | None = typer.Option(None, "--max-sections", help="First N sections only (N >= 1)."),
        config: Path | None = typer.Option(None, "--config", "-c", help="TOML settings file."),
        generator: str | None = typer.Option(None, "--generator", help="auto | doc-examples | llm"),
        model: str | None = typer.Option(None, "--model", help="LLM model name (llm generator)."),
        concurrency: int | None = typer.Option(None, "--concurrency", min=1, help="LLM requests in flight (generator.concurrency)."),
        executor: str | None = typer.Option(None, "--executor", help="local | codapi"),
        unsafe_no_sandbox: bool = typer.Option(False, "--unsafe-no-sandbox", help="Run code without bwrap."),
        train: bool | None = typer.Option(None, "--train/--no-train", help="Train + evaluate after export."),
        min_evidence: str | None = typer.Option(
            None, "--min-evidence", help="Keep only pairs with at least this evidence: tested | ran | compiled | "
            "conceptual (curator.min_evidence)."),
        set_: list[str] | None = typer.Option(None, "--set", help="Any setting: section.key=value (repeatable), "
                                              "e.g. --set train.preset=cpu-smollm2."),
        as_json: bool = typer.Option(False, "--json", help="Also print the summary as JSON on stdout."),
    ) -> None:
        """Split DOCS, generate pairs, validate every Zig block, curate and export the dataset."""
        from doctune.graph.runrecord import parse_changes

        flags = _overrides(generator, model, concurrency, executor, unsafe_no_sandbox, train, min_evidence)
        settings = settings_from(config, **_merged(flags, parse_changes(list(set_ or []))))
        _execute(docs, out_dir, settings, max_sections, as_json)
