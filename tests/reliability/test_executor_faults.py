"""Executor faults through the whole `doctune run`: a Codapi server answering 429 / 500 / closing connections
(hanging past the client timeout in the heavy variant), and a local sandbox that fails to start. Each fault is an
`infra_error`: retried, never recorded as bad code. Faults that stop -> every pair accepted; a permanent failure
-> the pairs are reported as `infra_error` (not compile/runtime errors) and nothing is cached against the code.

The Codapi side is the protocol fake of tests/fakes (real Zig behind it); the sandbox side puts a `bwrap` on
PATH that fails the way bubblewrap does when it cannot create namespaces, then hands over to the real one.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from doctune.executors.sandbox import bwrap_path

from tests.fakes.codapi_server import CodapiConfig, FakeCodapi
from tests.reliability.conftest import HEAVY, bump
from tests.reliability.harness import clean_env, no_traceback, run_cli, status_obj, zig_doc
from tests.test_validator import ZIG_CACHE

pytestmark = [
    pytest.mark.zig,
    pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap cannot create namespaces here"),
]
N_SECTIONS = 3
BAD_CODE = {"compile_error", "runtime_error", "test_failure", "wrong_output", "timeout", "resource_limit"}
HANG_S = 40.0  # > the client's timeout (compile 1 s + run 1 s + 30 s), heavy variant only


@pytest.fixture
def codapi() -> Iterator[FakeCodapi]:
    fake = FakeCodapi(CodapiConfig.load(pool_size=2), zig_cache=ZIG_CACHE).start()
    yield fake
    fake.stop()


def _doc(tmp: Path, title: str) -> Path:
    doc = tmp / "doc.md"
    doc.write_text(zig_doc(N_SECTIONS, title), encoding="utf-8")
    return doc


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def _outcome(out: Path) -> tuple[Counter[str], Counter[str]]:
    """(verdicts of the exported pairs, reasons of the rejected pairs)."""
    kept = Counter(r["verdict"]["verdict"] for r in _rows(out / "pairs.jsonl"))
    return kept, Counter(r["reason"] for r in _rows(out / "rejected.jsonl"))


def _cached_verdicts(cache: Path) -> list[str]:
    if not cache.exists():
        return []
    with sqlite3.connect(cache) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [json.dumps(row) for t in tables for row in db.execute(f'SELECT * FROM "{t}"')]  # noqa: S608


def _run(tmp: Path, doc: Path, **env: str) -> tuple[Path, Any]:
    out = tmp / "out"
    r = run_cli(["run", str(doc), "--out", str(out), "--generator", "doc-examples"], clean_env(tmp, **env),
                timeout=600)
    assert r.returncode == 0 and no_traceback(r.stderr), r.stderr[-3000:]
    return out, r


def _codapi_env(url: str, retries: int) -> dict[str, str]:
    return {"DOCTUNE_VALIDATOR__EXECUTOR": "codapi", "DOCTUNE_VALIDATOR__CODAPI_URL": url,
            "DOCTUNE_VALIDATOR__MAX_INFRA_RETRIES": str(retries),
            "DOCTUNE_VALIDATOR__COMPILE_TIMEOUT_S": "1", "DOCTUNE_VALIDATOR__RUN_TIMEOUT_S": "1"}


def test_codapi_transient_faults_are_retried(codapi: FakeCodapi, tmp_path: Path, tally: dict[str, Any]) -> None:
    faults = {"429": 3, "500": 2, "drop": 2, "hang": 1 if HEAVY else 0}
    codapi.force_status = [429] * faults["429"] + [500] * faults["500"]
    codapi.force_drop = [0.0] * faults["drop"] + [HANG_S] * faults["hang"]
    # Every non-429 fault could hit the same block: allow that many retries, so the faults always stop in time.
    retries = faults["500"] + faults["drop"] + faults["hang"] + 1
    out, _ = _run(tmp_path, _doc(tmp_path, "Codapi transient"), **_codapi_env(codapi.url, retries))
    injected = sum(faults.values())
    bump(tally, "executor_faults", injected=injected, **{f"kind:codapi {k}": v for k, v in faults.items() if v})

    kept, rejected = _outcome(out)
    assert not codapi.force_status and not codapi.force_drop, "not every fault was hit"
    assert len(codapi.requests) >= N_SECTIONS + injected - faults["429"]  # the failed calls were made again
    bump(tally, "executor_faults", blamed_code=sum(n for k, n in rejected.items() if k in BAD_CODE))
    assert kept == Counter(ok=N_SECTIONS) and not rejected, (kept, rejected)
    bump(tally, "executor_faults", handled=injected)


def test_codapi_down_is_infra_error_not_bad_code(codapi: FakeCodapi, tmp_path: Path,
                                                tally: dict[str, Any]) -> None:
    codapi.force_status = [500] * 1000
    doc = _doc(tmp_path, "Codapi down")
    out, r = _run(tmp_path, doc, **_codapi_env(codapi.url, 1))
    bump(tally, "executor_faults", injected=1, **{"kind:codapi permanent 500": 1})

    kept, rejected = _outcome(out)
    bump(tally, "executor_faults", blamed_code=sum(n for k, n in rejected.items() if k in BAD_CODE))
    # Pairs the executor could not check are infra failures, and their sections count as failed (not done) ...
    assert not kept and rejected == Counter(infra_error=N_SECTIONS, section_failed=N_SECTIONS), \
        (kept, rejected, r.stderr[-2000:])
    assert len(codapi.requests) == 2 * N_SECTIONS  # each block tried, then retried once
    assert not any("infra" in row for row in _cached_verdicts(tmp_path / "verdicts.sqlite")), \
        "an infra failure was cached as the code's verdict"
    assert status_obj(out).failed == N_SECTIONS
    # ... so once the server is back, `doctune retry` validates them again and they are accepted.
    codapi.force_status = []
    again = run_cli(["retry", str(out)], clean_env(tmp_path, **_codapi_env(codapi.url, 1)), timeout=600)
    assert again.returncode == 0 and no_traceback(again.stderr), again.stderr[-3000:]
    kept, rejected = _outcome(out)
    assert kept == Counter(ok=N_SECTIONS) and not rejected, (kept, rejected)
    bump(tally, "executor_faults", handled=1)


def _failing_bwrap(tmp: Path, fails: int) -> Path:
    """A `bwrap` that passes the availability probe, fails its next `fails` calls like bubblewrap does when it
    cannot create a namespace, then runs the real one (fails < 0: always fails)."""
    real = shutil.which("bwrap")
    assert real is not None
    bindir = tmp / "bin"
    bindir.mkdir()
    counter = tmp / "bwrap-fails-left"
    counter.write_text(str(fails))
    script = bindir / "bwrap"
    script.write_text(f"""#!/bin/sh
last=""; for a in "$@"; do last="$a"; done
[ "$last" = /usr/bin/true ] && exec {real} "$@"
left=$(cat {counter})
if [ "$left" != 0 ]; then
  [ "$left" -gt 0 ] && echo $((left - 1)) > {counter}
  echo "bwrap: Creating new namespace failed: Resource temporarily unavailable" >&2
  exit 1
fi
exec {real} "$@"
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bindir


@pytest.mark.parametrize("fails", [3, -1], ids=["transient", "permanent"])
def test_sandbox_start_failure(fails: int, tmp_path: Path, tally: dict[str, Any]) -> None:
    bindir = _failing_bwrap(tmp_path, fails)
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
           "DOCTUNE_VALIDATOR__ZIG_CACHE_DIR": str(ZIG_CACHE),
           "DOCTUNE_VALIDATOR__MAX_INFRA_RETRIES": "3" if fails > 0 else "1"}
    out, r = _run(tmp_path, _doc(tmp_path, f"Sandbox {'flaky' if fails > 0 else 'broken'}"), **env)
    kind = "sandbox start (transient)" if fails > 0 else "sandbox start (permanent)"
    bump(tally, "executor_faults", injected=max(fails, 1), **{f"kind:{kind}": max(fails, 1)})

    kept, rejected = _outcome(out)
    bump(tally, "executor_faults", blamed_code=sum(n for k, n in rejected.items() if k in BAD_CODE))
    if fails > 0:
        assert (tmp_path / "bwrap-fails-left").read_text().strip() == "0", "the fake sandbox was not used"
        assert kept == Counter(ok=N_SECTIONS) and not rejected, (kept, rejected, r.stderr[-2000:])
    else:
        assert not kept and rejected == Counter(infra_error=N_SECTIONS, section_failed=N_SECTIONS), \
            (kept, rejected, r.stderr[-2000:])
        assert not any("infra" in row for row in _cached_verdicts(tmp_path / "verdicts.sqlite"))
        assert status_obj(out).failed == N_SECTIONS and "doctune retry" in r.stderr
    bump(tally, "executor_faults", handled=max(fails, 1))
