"""Packaging and docs contracts: one import namespace, a non-editable install works, README matches settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_subpackages_map_to_top_level_folders() -> None:
    import doctune.agents
    import doctune.graph
    import doctune.prompts
    import doctune.trainer

    for mod, folder in [(doctune.agents, "agents"), (doctune.graph, "graph"), (doctune.trainer, "trainer"),
                        (doctune.prompts, "prompts")]:
        assert Path(mod.__file__).parent.name == folder


def test_import_doctune_is_light() -> None:
    code = "import sys, doctune, doctune.app.cli; print('torch' in sys.modules, 'langgraph' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.slow
def test_non_editable_install_has_one_namespace(tmp_path: Path) -> None:
    """`pip install .` (non-editable) puts everything under doctune/ and nothing at the top level."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT)], check=True, timeout=600)
    top = sorted(p.name for p in target.iterdir() if not p.name.endswith((".dist-info", ".egg-info")))
    assert top in (["doctune"], ["bin", "doctune"]), top
    for sub in ["core", "executors", "agents", "graph", "app", "app/cli", "trainer", "prompts", "evals"]:
        assert (target / "doctune" / sub / "__init__.py").is_file(), sub
    assert list((target / "doctune" / "prompts").glob("*.j2")), "prompt templates are package data"
    assert (target / "doctune" / "core" / "data" / "zig-sample.md").is_file()
    code = ("import doctune.agents.splitter, doctune.graph.graph, doctune.app.cli; "
            "print(doctune.agents.splitter.__file__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=tmp_path).stdout
    assert out.strip().startswith(str(target))


def test_readme_settings_table_matches_code() -> None:
    from doctune.core.settings_doc import settings_table

    assert settings_table() in (ROOT / "README.md").read_text(encoding="utf-8"), (
        "README's settings table is stale: run python scripts/update_readme_settings.py"
    )


def test_readme_has_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    cmds = [ln.split("#")[0].strip() for ln in block.strip().splitlines()]
    assert cmds == ["make demo", "source .venv/bin/activate", "make test"]  # the venv puts `doctune` on PATH
    assert "make test" in (ROOT / ".ci" / "run").read_text()
