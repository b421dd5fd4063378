"""Trainer callbacks shared by both backends: the loss log (JSONL) and a Rich progress bar with ETA, tokens/s
and peak memory (on stderr). Also ``peak_memory_mb()``.

They subclass ``transformers.TrainerCallback``; the class is built on first use so importing this module does not
import transformers (the CLI must start fast).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def peak_memory_mb() -> float:
    """Peak GPU memory allocated (CUDA) or peak resident memory of this process (CPU), in MiB."""
    try:
        import torch

        if torch.cuda.is_available():
            return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except ImportError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(kb / 1024, 1)


def make_callbacks(loss_path: Path, tokens_per_step: float, show_progress: bool = True) -> list[Any]:
    """[LossLogger, RichProgress] for a run whose optimizer steps see about ``tokens_per_step`` tokens each."""
    from transformers import TrainerCallback

    class LossLogger(TrainerCallback):
        """Appends each log record (step, loss, lr, grad norm, tokens/s, memory; GRPO: reward) to ``loss.jsonl``."""

        def __init__(self) -> None:
            self.t0 = time.monotonic()
            self.records: list[dict[str, Any]] = []
            loss_path.parent.mkdir(parents=True, exist_ok=True)
            loss_path.write_text("")

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not logs or "loss" not in logs:
                return
            elapsed = time.monotonic() - self.t0
            # TRL logs the exact number of tokens seen; otherwise estimate from the mean example length
            seen = float(logs.get("num_tokens") or state.global_step * tokens_per_step)
            rec = {
                "step": state.global_step,
                "epoch": round(float(logs.get("epoch", state.epoch or 0.0)), 4),
                "loss": round(float(logs["loss"]), 5),
                "learning_rate": logs.get("learning_rate"),
                "grad_norm": None if logs.get("grad_norm") is None else round(float(logs["grad_norm"]), 5),
                "elapsed_s": round(elapsed, 2),
                "tokens": int(seen),
                "tokens_per_s": round(seen / elapsed, 1) if elapsed > 0 else None,
                "peak_mem_mb": peak_memory_mb(),
            }
            for key in ("reward", "reward_std"):  # GRPO: mean reward of the step's completions
                if logs.get(key) is not None:
                    rec[key] = round(float(logs[key]), 5)
            self.records.append(rec)
            with loss_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")

    class RichProgress(TrainerCallback):
        """One progress bar for the whole run: step/total, ETA, loss, tokens/s, peak memory."""

        def __init__(self) -> None:
            self.progress: Any = None
            self.task: Any = None
            self.t0 = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.t0 = time.monotonic()
            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"), console=Console(file=sys.stderr), transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.max_steps, info="")

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if self.progress is None or not logs or "loss" not in logs:
                return
            elapsed = max(time.monotonic() - self.t0, 1e-9)
            seen = float(logs.get("num_tokens") or state.global_step * tokens_per_step)
            info = (f"loss {float(logs['loss']):.4f}  {seen / elapsed:,.0f} tok/s  "
                    f"peak {peak_memory_mb():,.0f} MiB")
            self.progress.update(self.task, info=info)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    callbacks: list[Any] = [LossLogger()]
    if show_progress:
        callbacks.append(RichProgress())
    return callbacks
