"""Shared fixtures. The repo root goes at the END of sys.path: `tests.fakes` is importable, while `doctune`
still resolves to the installed package (a non-editable install must be what the tests exercise)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpus"
LANGREF = CORPUS / "zig-0.14.0-langref.md"
EXAMPLES = CORPUS / "langref-examples.jsonl"


@pytest.fixture
def langref() -> Path:
    if not LANGREF.is_file():
        pytest.skip(f"shared corpus not found at {LANGREF}")
    return LANGREF


@pytest.fixture
def examples_jsonl() -> Path:
    if not EXAMPLES.is_file():
        pytest.skip(f"shared corpus not found at {EXAMPLES}")
    return EXAMPLES
