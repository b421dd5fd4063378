"""Shared fixtures. The repo root goes at the END of sys.path: `tests.fakes` is importable, while `doctune`
still resolves to the installed package (a non-editable install must be what the tests exercise)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))


# The language reference is Zig's own documentation: used as data from ../shared/corpus, never copied into the
# project. The installed package finds it through $DOCTUNE_CORPUS_DIR (subprocesses inherit it).
_SHARED_CORPUS = ROOT.parent / "shared" / "corpus"
if _SHARED_CORPUS.is_dir():
    os.environ.setdefault("DOCTUNE_CORPUS_DIR", str(_SHARED_CORPUS))


def _shipped(name: str) -> Path:
    from doctune.core import corpus

    return corpus.path(name)


def _reference(name: str) -> Path:
    from doctune.core import corpus
    from doctune.core.errors import InputError

    try:
        return corpus.path(name)
    except InputError as e:
        pytest.skip(str(e))


LANGREF = _SHARED_CORPUS / "zig-0.14.0-langref.md"
EXAMPLES = _SHARED_CORPUS / "langref-examples.jsonl"


@pytest.fixture
def langref() -> Path:
    return _reference("langref")


@pytest.fixture(scope="session")
def langref_path() -> Path:
    return _reference("langref")


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return _shipped("sample")


@pytest.fixture
def examples_jsonl() -> Path:
    return _reference("examples")


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def checkpoint_url(request: pytest.FixtureRequest):
    """Checkpointer URL per backend: None = SQLite in the run dir; else a fresh database on the throw-away
    PostgreSQL of `make test` (skipped when none was started)."""
    if request.param == "sqlite":
        yield None
        return
    from tests.reliability.harness import PG_ENV, pg_database

    if not os.environ.get(PG_ENV):
        pytest.skip(f"{PG_ENV} is not set: `make test` (scripts/test.sh) starts a throw-away PostgreSQL")
    with pg_database() as url:
        yield url
