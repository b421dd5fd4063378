"""benchmarks/train_gpu.py on CPU with the tiny config: the harness (model built from a config, synthetic ChatML
data of a length distribution, a worker process per backend, the summary) runs end to end. No GPU here, so the
Unsloth side and the real numbers are left to a GPU machine (benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytestmark = pytest.mark.train

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "train_gpu.py"


@pytest.mark.slow
def test_train_gpu_benchmark_smoke_on_cpu(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--cpu", "--backends", "hf", "--steps", "3", "--warmup", "1",
         "--examples", "32", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    (row,) = res["rows"]
    assert row["backend"] == "hf" and row["steps"] == 3 and row["tokens_per_s"] > 0
    assert "hf" in proc.stdout


def _load_script(path: Path) -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_both_backends_train_on_the_same_chat_template(tmp_path: Path) -> None:
    bench = _load_script(SCRIPT)
    hf, unsloth = (bench.worker_config(b, tmp_path, 3, False) for b in ("hf", "unsloth"))  # type: ignore[attr-defined]
    assert hf.chat_template == unsloth.chat_template is None
    assert hf.model_dump(exclude={"backend"}) == unsloth.model_dump(exclude={"backend"})
