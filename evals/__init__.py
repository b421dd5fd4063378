"""Evaluation task sets shipped with doctune (JSONL package data).

- `zig-tasks.jsonl`: the default eval set (60 short tasks over 12+ topics, with reference and wrong solutions).
- `heldout-exercises.jsonl`: real exercises (an RPN calculator, an LRU cache, Dijkstra, a CSV parser, ...) with
  reference solutions of realistic size (1.2-2.9 KB), hidden tests and stubs (bodies left as TODO). Opt-in
  (`doctune eval --tasks ...`); it checks that the evaluator scores real solutions 1.0 and stubs 0.0. Its prompts
  are decontaminated like the default set's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

DEFAULT_TASKS = Path(__file__).with_name("zig-tasks.jsonl")
HELDOUT_TASKS = Path(__file__).with_name("heldout-exercises.jsonl")


def task_files(paths: Sequence[Path | str] = ()) -> list[Path]:
    """The given task files, or the shipped default set."""
    return [Path(p) for p in paths] if paths else [DEFAULT_TASKS]


def load_eval_prompts(paths: Sequence[Path | str] = ()) -> list[str]:
    """Prompts of the eval tasks (for decontamination): the given files, else both shipped sets. Missing default
    file -> no prompts."""
    prompts: list[str] = []
    for f in [Path(p) for p in paths] if paths else [DEFAULT_TASKS, HELDOUT_TASKS]:
        if not f.is_file():
            continue
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                prompts.append(json.loads(line)["prompt"])
    return prompts
