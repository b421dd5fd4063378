"""Crash safety: SIGKILL a `doctune run` of the sample doc at points spread over the run (checkpoint saves,
store records, export files), run the same command again, and get exactly the dataset of an uninterrupted run —
no duplicates, nothing lost. Default: 3 kill points; DOCTUNE_RELIABILITY_HEAVY=1: 10."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import HEAVY, KILLER, bump, copy_cache
from tests.reliability.harness import (
    clean_env,
    dataset_signature,
    no_traceback,
    pair_ids,
    rejected_signature,
    run_cli,
    status_obj,
)

pytestmark = [pytest.mark.zig, pytest.mark.slow]
N_KILLS = 10 if HEAVY else 3


def kill_points(events: list[str], n: int, seed: int = 7) -> list[int]:
    """n event indices (1-based) spread over the run: one per equal slice, random inside it, never the last few
    (a run's event count varies a little with scheduling)."""
    usable = max(1, len(events) - 3)
    rng = random.Random(seed)
    bounds = [(usable * i // n + 1, max(usable * i // n + 1, usable * (i + 1) // n)) for i in range(n)]
    return [rng.randint(lo, hi) for lo, hi in bounds]


def test_kill_points_cover_the_stages() -> None:
    events = ["ckpt.put"] * 5 + ["store.sections"] * 10 + ["store.pairs"] * 60 + ["export.jsonl"] * 2
    pts = kill_points(events, 3)
    assert len(set(pts)) == 3 and all(1 <= p <= len(events) - 3 for p in pts)
    assert pts == sorted(pts)


@pytest.mark.parametrize("i", range(N_KILLS))
def test_sigkill_then_resume_gives_the_same_dataset(i: int, sample_reference: dict[str, Any], tmp_path: Path,
                                                    tally: dict[str, Any]) -> None:
    events = sample_reference["events"]
    assert any(e.startswith("export.") for e in events) and any(e == "ckpt.writes" for e in events)
    k = kill_points(events, N_KILLS)[i]
    out = tmp_path / "out"
    stage = tmp_path / "stage.txt"
    env = clean_env(tmp_path, DOCTUNE_KILLER_STAGE=str(stage))
    copy_cache(sample_reference["cache"], tmp_path)
    args = ["run", sample_reference["doc"], "--out", str(out)]
    bump(tally, "crash", kills=1)

    crashed = subprocess.run([sys.executable, str(KILLER), "--kill-at", str(k), "--", *args], env=env,
                             capture_output=True, text=True, timeout=600)
    assert crashed.returncode == -9, f"not killed at event {k}/{len(events)}: {crashed.stderr[-2000:]}"
    where = stage.read_text()

    resumed = run_cli(args, env)
    assert resumed.returncode == 0 and no_traceback(resumed.stderr), (where, resumed.stderr[-3000:])
    assert dataset_signature(out) == sample_reference["sig"], f"dataset differs after a kill at {where}"
    assert rejected_signature(out) == sample_reference["rejected"], f"rejected differs after a kill at {where}"
    ids = pair_ids(out)
    assert len(ids) == len(set(ids)), f"duplicate pairs after a kill at {where}"
    assert status_obj(out).state == "completed"
    bump(tally, "crash", survived=1, **{f"at:{where.split(':')[0]}": 1})
