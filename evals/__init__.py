"""Evaluation task sets shipped with doctune (JSONL package data): `zig-tasks.jsonl`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

DEFAULT_TASKS = Path(__file__).with_name("zig-tasks.jsonl")


def task_files(paths: Sequence[Path | str] = ()) -> list[Path]:
    """The given task files, or the shipped default set."""
    return [Path(p) for p in paths] if paths else [DEFAULT_TASKS]


def load_eval_prompts(paths: Sequence[Path | str] = ()) -> list[str]:
    """Prompts of the eval tasks (for decontamination). Missing default file -> no prompts."""
    prompts: list[str] = []
    for f in task_files(paths):
        if not f.is_file():
            continue
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                prompts.append(json.loads(line)["prompt"])
    return prompts
