"""benchmarks/train_grpo_gpu.py on CPU with the tiny config: the harness (eval tasks as RL rows with hidden
tests, a worker process per backend, the real validator as reward, the summary) runs end to end. No GPU here:
the Unsloth side and the real figures are left to a GPU machine (benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytestmark = [pytest.mark.train, pytest.mark.slow, pytest.mark.zig]
# Sampling is token by token: on a small shared CPU box two OpenMP threads spin-wait on each other (measured here:
# 8x the CPU time of one thread per generated token), so the subprocess runs single-threaded.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "train_grpo_gpu.py"


def test_train_grpo_gpu_benchmark_smoke_on_cpu(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--cpu", "--backends", "hf", "--steps", "2", "--warmup", "1",
         "--prompts", "4", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1800, env=ONE_THREAD,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    (row,) = res["rows"]
    assert row["backend"] == "hf" and row["steps"] == 2 and row["tokens_per_s"] > 0
    assert row["mean_reward"] == 0.0  # a random tiny model writes no Zig
    assert "| hf |" in proc.stdout
