"""The floors (README "Architecture") hold: import-linter's contracts in pyproject pass on this tree, and a planted
upward import (core importing the graph) is caught -- so the check can fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed (extra [dev])")


def _contracts(tree: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(tree)], check=True, capture_output=True)
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(tree / "pyproject.toml")], cwd=tmp,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)


def _copy(tmp: Path) -> Path:
    tree = tmp / "tree"
    keep = ("pyproject.toml", "README.md", "doctune", "agents", "graph", "trainer", "prompts", "evals")
    tree.mkdir()
    for name in keep:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, tree / name)
    return tree


def test_the_floors_hold(tmp_path: Path) -> None:
    res = _contracts(_copy(tmp_path), tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    errors = tree / "doctune" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom doctune.graph import names  # noqa: E402,F401\n")
    res = _contracts(tree, tmp_path)
    assert res.returncode != 0
    assert "doctune.core is not allowed to import doctune.graph" in res.stdout
