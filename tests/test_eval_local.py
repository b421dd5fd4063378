"""`doctune eval` on local models: base SmolLM2 vs a freshly trained adapter on 10 tasks, through the real
validator; checks the files a person reads (results.json, report.md, two PNG plots)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

# its CLI subprocess may take 1500 s on a loaded 2-core machine (train, generate, then each answer compiled alone)
pytestmark = [pytest.mark.train, pytest.mark.zig, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_cli_eval_base_vs_tuned(tmp_path: Path) -> None:
    from doctune.trainer.api import train

    from tests.test_train_cpu import make_dataset

    res = train(make_dataset(tmp_path), tmp_path / "train", preset="cpu-smollm2", max_steps=2, show_progress=False)
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-c", "from doctune.app.cli import main; main()", "eval", "--out", str(out),
         "--model", "base=smollm2", "--model", f"tuned={res.out_dir}", "--max-tasks", "10",
         "--max-new-tokens", "96"],
        capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(out / "report.md")
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"base", "tuned"}
    for score in results["models"].values():
        assert score["n"] == 10 and 0 <= score["passed"] <= score["compiled"] <= 10
    assert len(results["tasks"]) == 10 and len({t["topic"] for t in results["tasks"]}) == 10
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    for row in answers:
        for texts in row["answers"].values():
            assert all("<|im_end|>" not in t for t in texts)  # stopped at end of turn, decoded cleanly
    report = (out / "report.md").read_text()
    assert "| base |" in report and "| tuned |" in report and str(res.loss_log) in report
    for png in ("loss.png", "pass_rates.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
