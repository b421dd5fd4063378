"""The first minute with the CLI: usage errors are one line and a clean exit code, never a traceback, whatever
click copy Typer carries (typer >= 0.29 has its own); help is plain and shows no `<bool>` for flags."""

from __future__ import annotations

import subprocess
import sys

import pytest

_CLI = "from doctune.app.cli import main; main()"


def doctune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _CLI, *args], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "100", "PATH": "/usr/bin:/bin", **_pythonpath()})


def _pythonpath() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME", "VIRTUAL_ENV", "DOCTUNE_CORPUS_DIR")}


def test_version_is_one_line() -> None:
    from doctune import __version__

    p = doctune("--version")
    assert p.returncode == 0 and p.stdout == f"doctune {__version__}\n" and p.stderr == ""


@pytest.mark.parametrize("args, message", [
    (["bogus"], "error: No such command 'bogus'. (see `doctune --help`)"),
    (["split"], "error: Missing argument 'docs'. (see `doctune split --help`)"),
    (["split", "--nope", "x.md"], "error: No such option: --nope"),
    (["split", "--max-depth", "deep", "x.md"], "error: Invalid value for '--max-depth'"),
])
def test_usage_errors_are_one_line(args: list[str], message: str) -> None:
    p = doctune(*args)
    assert p.returncode == 2, p
    assert p.stdout == "" and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stderr.startswith(message), p.stderr
    assert "Traceback" not in p.stderr


def test_an_error_keeps_its_square_brackets(tmp_path) -> None:
    """Error lines are text, not markup: a file named `notes[draft].md` (or the hint `pip install
    'doctune[postgres]'`) is printed as it is."""
    p = doctune("split", str(tmp_path / "notes[draft].md"))
    assert p.returncode == 2 and "notes[draft].md" in p.stderr and "Traceback" not in p.stderr, p.stderr


@pytest.mark.parametrize("args", [[], ["-h"], ["--help"]])
def test_bare_and_help_print_the_help(args: list[str]) -> None:
    p = doctune(*args)
    assert p.returncode == 0, p
    assert p.stdout.startswith("Usage: doctune [OPTIONS] COMMAND [ARGS]...") and "Traceback" not in p.stderr
    for cmd in ("split", "validate", "run", "demo", "corpus", "serve-llm"):
        assert f"\n  {cmd} " in p.stdout, cmd


def test_command_help_shows_flags_without_a_value_type() -> None:
    p = doctune("run", "-h")
    assert p.returncode == 0 and "--train / --no-train" in p.stdout
    assert "<bool>" not in p.stdout and "-h, --help" in p.stdout


def test_corpus_lists_and_copies_the_shipped_docs(tmp_path, langref_path) -> None:
    p = doctune("corpus")
    names = dict(line.split("\t") for line in p.stdout.splitlines())
    assert set(names) == {"sample", "stale", "langref", "examples"}
    assert names["langref"] == str(langref_path)  # found through $DOCTUNE_CORPUS_DIR, not shipped
    copied = doctune("corpus", "--out", str(tmp_path / "c"))
    assert copied.returncode == 0
    assert sorted(f.name for f in (tmp_path / "c").iterdir()) == ["zig-sample.md", "zig-stale.md"]


def test_corpus_without_the_language_reference_says_where_to_point(tmp_path) -> None:
    import os

    env = {**os.environ, "DOCTUNE_CORPUS_DIR": str(tmp_path)}  # explicit and empty: no fallback
    p = subprocess.run([sys.executable, "-c", _CLI, "corpus"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0
    assert "langref\t(not found: set DOCTUNE_CORPUS_DIR)" in p.stdout.splitlines()
    split = subprocess.run([sys.executable, "-c", "from doctune.core import corpus; corpus.path('langref')"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert split.returncode != 0 and "set DOCTUNE_CORPUS_DIR" in split.stderr
