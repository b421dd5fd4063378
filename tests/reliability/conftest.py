"""Reliability suite fixtures: the shared tally, a reference run of the sample doc, and the one-screen summary
printed at the end of the session (`pytest_terminal_summary`)."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import clean_env, dataset_signature, rejected_signature

HEAVY = os.environ.get("DOCTUNE_RELIABILITY_HEAVY", "") not in ("", "0")
KILLER = Path(__file__).with_name("killer.py")
_TALLY = pytest.StashKey[dict]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_TALLY] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The whole suite is `slow`: it runs in one pytest session (`make test-slow`, in CI), so its one-screen
    summary covers every area at once."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Counters for the summary: tests add to them (tally[area][key] += n)."""
    return request.config.stash[_TALLY]


def bump(tally: dict[str, Any], area: str, **counts: int) -> None:
    c = tally.setdefault(area, Counter())
    c.update(counts)


@pytest.fixture(scope="session")
def warm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One verdict cache for the session's tests that do not exercise the executor (crash, secrets, inputs)."""
    return tmp_path_factory.mktemp("verdicts") / "verdicts.sqlite"


@pytest.fixture(scope="session")
def sample_reference(tmp_path_factory: pytest.TempPathFactory, warm_cache: Path) -> dict[str, Any]:
    """An uninterrupted run of the shipped sample doc (offline generator, real Zig), under the killer in count
    mode: its dataset, its rejected pairs, and the sequence of durable writes the run made."""
    import subprocess
    import sys

    from doctune.core.corpus import path as corpus_path

    tmp = tmp_path_factory.mktemp("sample-reference")
    events = tmp / "events.json"
    env = clean_env(tmp, DOCTUNE_VALIDATOR__CACHE_PATH=str(warm_cache))
    cmd = [sys.executable, str(KILLER), "--events", str(events), "--",
           "run", str(corpus_path("sample")), "--out", str(tmp / "out")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"doc": str(corpus_path("sample")), "sig": dataset_signature(tmp / "out"),
            "rejected": rejected_signature(tmp / "out"), "events": json.loads(events.read_text()),
            "cache": warm_cache}


def copy_cache(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / "verdicts.sqlite"
    shutil.copy(src, dst)
    return dst


# ---------------------------------------------------------------- the one-screen summary

_ORDER = ["crash", "llm_faults", "executor_faults", "hostile", "bad_inputs", "secrets"]


def _line(area: str, c: Counter) -> str:
    if area == "crash":
        stages = ", ".join(sorted(k.removeprefix("at:") for k in c if k.startswith("at:")))
        return f"crash safety     {c['survived']}/{c['kills']} SIGKILLs survived, same dataset each time ({stages})"
    if area == "llm_faults":
        kinds = ", ".join(f"{k.removeprefix('kind:')} {v}" for k, v in sorted(c.items()) if k.startswith("kind:"))
        return (f"LLM faults       {c['injected']} injected ({kinds}); {c['handled']} handled; "
                f"sections accounted for {c['accounted']}/{c['sections']}")
    if area == "executor_faults":
        kinds = ", ".join(f"{k.removeprefix('kind:')} {v}" for k, v in sorted(c.items()) if k.startswith("kind:"))
        return (f"executor faults  {c['injected']} injected ({kinds}); {c['handled']} handled; "
                f"{c['blamed_code']} recorded as bad code")
    if area == "hostile":
        return f"hostile code     {c['contained']}/{c['cases']} contained through the whole graph"
    if area == "bad_inputs":
        return (f"bad inputs       {c['rejected']}/{c['cases']} rejected with one clear line, exit != 0, "
                f"no traceback, nothing half-written")
    if area == "secrets":
        return f"secret leaks     {c['leaks']} found (must be 0) in {c['places']} places checked"
    return f"{area}: {dict(c)}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    tally = config.stash.get(_TALLY, {})
    if not tally:
        return
    tr = terminalreporter
    tr.write_sep("=", "doctune reliability summary")
    for area in _ORDER:
        tr.write_line(_line(area, tally[area]) if area in tally else f"{area:<16} (not run)")
    if not HEAVY:
        tr.write_line("(default variant; DOCTUNE_RELIABILITY_HEAVY=1 runs the heavier one)")
