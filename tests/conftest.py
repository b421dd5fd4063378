"""Shared fixtures. The repo root goes at the END of sys.path: `tests.fakes` is importable, while `doctune`
still resolves to the installed package (a non-editable install must be what the tests exercise)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))


def _shipped(name: str) -> Path:
    """The Zig corpus ships with the package (doctune/data): no test depends on ../shared being beside the repo."""
    from doctune import corpus

    return corpus.path(name)


LANGREF = _shipped("langref")
EXAMPLES = _shipped("examples")


@pytest.fixture
def langref() -> Path:
    return LANGREF


@pytest.fixture(scope="session")
def langref_path() -> Path:
    return LANGREF


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return _shipped("sample")


@pytest.fixture
def examples_jsonl() -> Path:
    return EXAMPLES
