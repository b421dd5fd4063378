"""`doctune demo` shows the product working: what was split, generated, validated (verdict counts, a rejected
pair with the compiler's message), that the offline generator repairs nothing, and the eval slice it uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_simplest_tasks_are_the_shortest_references() -> None:
    from doctune.app.cli.demo import simplest_tasks

    picked = simplest_tasks(6)
    assert len(picked) == 6
    lengths = [len(t.reference) for t in picked]
    assert lengths == sorted(lengths)
    everything = simplest_tasks(10_000)
    assert max(lengths) <= min(len(t.reference) for t in everything[6:])


@pytest.mark.zig
def test_demo_without_training_walks_through_each_stage(tmp_path: Path) -> None:
    env = {**os.environ, "DOCTUNE_VALIDATOR__CACHE_PATH": str(tmp_path / "verdicts.sqlite")}
    p = subprocess.run([sys.executable, "-c", "from doctune.app.cli import main; main()", "demo", "--no-train",
                        "--out", str(tmp_path / "demo")], capture_output=True, text=True, timeout=900, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = {ln.split(":", 1)[0]: ln for ln in p.stderr.splitlines() if ln[:10].rstrip().endswith(":")}
    assert "from 2 documents" in lines["split"]
    assert "ok 15" in lines["validated"] and "compile_error (rejected) 2" in lines["validated"]
    assert "compile_error (as the doc says) 1" in lines["validated"]
    assert lines["repaired"].startswith("repaired:  none")
    # The stale tutorial's pre-0.11 cast is rejected with Zig 0.14's own message.
    assert "error: expected 1 argument, found 2" in lines["rejected"]
    assert (tmp_path / "demo" / "dataset").is_dir()
