"""`doctune export RUN_DIR`: the run's test split as eval tasks (`doctune eval --tasks`) plus the run's own
solutions as an answers file (`--model ref=answers:FILE`). Display only: the logic is `doctune.agents.dataset`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from doctune.app.cli.common import console, out, settings_from


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        run_dir: Annotated[Path, typer.Argument(help="A run's output directory (has dataset/), or a dataset "
                                                "folder.")],
        out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write eval-tasks.jsonl and "
                                                     "eval-answers.jsonl (default: RUN_DIR).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
        config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file (the near-"
                                                    "duplicate threshold: curator.near_dup_threshold).")] = None,
    ) -> None:
        """Write the test split's pairs that carry hidden tests or a stated stdout as eval tasks, leaving out
        near-duplicates of train pairs (prompt or code); and the run's solutions as an answers file."""
        from doctune.agents.dataset import export_eval_tasks, export_summary_line

        settings = settings_from(config)
        info = export_eval_tasks(run_dir, out_dir, threshold=settings.curator.near_dup_threshold)
        console.print(export_summary_line(info), highlight=False, soft_wrap=True)
        if not info["tasks"]:
            near = sum(n for why, n in info["skipped"].items() if why.startswith("near-duplicate"))
            why = ("the dataset has no test split (its sections all went to train: a run of one section)"
                   if not info["test_pairs"] else
                   f"all {near} candidate(s) near-duplicate train pairs (decontamination)" if near and near == sum(
                       info["skipped"].values()) else "no test-split pair has proven hidden tests or a stated "
                   "stdout (triplets come from `--generator llm`)")
            console.print(f"[yellow]note:[/] nothing to evaluate: {why}", highlight=False)
        if as_json:
            out.print_json(json.dumps(info))
        else:
            out.print(info["tasks_path"], highlight=False)
