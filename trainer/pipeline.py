"""The graph's ``train`` and ``evaluate`` nodes call these (``graph/nodes.py``): async, return small JSON-able
dicts for the run state; big outputs stay in files under ``<out>/train`` and ``<out>/eval``.

- ``train_node``: trains the preset from ``settings.train`` on the exported dataset (in a worker thread) with
  ``settings.train.method``; GRPO's reward is the ``validate_many`` the graph passes in (this floor does not
  import the validator).
- ``evaluate_node``: base model vs the trained adapter on the dataset's test split plus the shipped eval tasks
  (``settings.eval``), through the validator; returns the report's path.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctune.core.settings import Settings

if TYPE_CHECKING:
    from doctune.trainer.reward import ValidateMany


async def train_node(settings: Settings, out_dir: Path, export: dict[str, Any],
                     validate_many: ValidateMany | None = None) -> dict[str, Any]:
    """``validate_many``: the reward's validator, needed when ``settings.train.method`` includes GRPO."""
    from doctune.trainer.api import train

    t = settings.train
    res = await asyncio.to_thread(
        train, export["dataset_path"], Path(out_dir) / "train", preset=t.preset, max_steps=t.max_steps,
        backend=t.backend, overrides=dict(t.overrides), method=t.method, validate_many=validate_many,
        cache_dir=settings.cache_dir,
    )
    return {
        "out_dir": str(res.out_dir), "adapter": str(res.adapter_dir), "base_model": res.base_model,
        "preset": res.preset, "backend": res.backend, "method": res.method, "steps": res.steps,
        "first_loss": res.first_loss,
        "final_loss": res.final_loss, "runtime_s": res.runtime_s, "tokens_per_s": res.tokens_per_s,
        "loss_log": str(res.loss_log), "rewards_log": str(res.rewards_log) if res.rewards_log else None,
    }


def default_tasks(settings: Settings, dataset_path: str | Path | None) -> list[Any]:
    """The dataset's test split as tasks (when there is one) plus the task files (default: the shipped set)."""
    from doctune.evals import task_files
    from doctune.trainer.data import load_splits
    from doctune.trainer.tasks import load_tasks, tasks_from_split

    tasks = []
    if dataset_path is not None and Path(dataset_path).exists():
        _, test = load_splits(Path(dataset_path))
        if test is not None:
            tasks += tasks_from_split(test)
    return tasks + load_tasks(task_files(settings.eval.tasks))


async def evaluate_node(
    settings: Settings, out_dir: Path, export: dict[str, Any], train: dict[str, Any], make_checker: Any
) -> dict[str, Any]:
    from doctune.trainer.evaluate import evaluate_async

    e = settings.eval
    tasks = default_tasks(settings, export.get("dataset_path"))
    models = {"base": train["base_model"], "tuned": train["adapter"]}
    results = await evaluate_async(
        tasks, models, Path(out_dir) / "eval", samples=e.samples, max_tasks=e.max_tasks,
        max_new_tokens=e.max_new_tokens, validator=settings.validator, make_checker=make_checker,
        loss_log=Path(train["loss_log"]), cache_dir=settings.cache_dir,
    )
    scores = results.dump()["models"]
    return {
        "report": str(Path(out_dir) / "eval" / "report.md"),
        "results": str(Path(out_dir) / "eval" / "results.json"),
        "tasks": len(results.tasks),
        "models": {m: {"pass@1": s["pass@1"], "compile_rate": s["compile_rate"]} for m, s in scores.items()},
    }
