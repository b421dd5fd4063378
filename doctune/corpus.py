"""The Zig documents doctune ships as package data, so a fresh install has real input without any download.

- ``zig-sample.md``: a short tour written for ``doctune demo`` (every example annotated with its expected result).
- ``zig-stale.md``: notes from an older tutorial whose examples no longer compile with 0.14 (the demo shows them
  rejected with the compiler's message).
- ``zig-0.14.0-langref.md``: the Zig 0.14.0 language reference as Markdown (Zig's own docs, MIT; the license is
  ``LICENSE-zig.txt`` beside it), the pipeline's real input.
- ``langref-examples.jsonl``: its 287 example files with their annotated results, in the input format of
  ``doctune validate --jsonl``.

Defines ``SHIPPED`` (name -> file name), ``path(name)`` and ``copy_to(dir)``.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from doctune.errors import InputError

SHIPPED = {
    "sample": "zig-sample.md",
    "stale": "zig-stale.md",
    "langref": "zig-0.14.0-langref.md",
    "examples": "langref-examples.jsonl",
    "license": "LICENSE-zig.txt",
}


def path(name: str) -> Path:
    """The installed file for a short name (``sample``, ``stale``, ``langref``, ``examples``, ``license``)."""
    if name not in SHIPPED:
        raise InputError(f"unknown corpus file {name!r}; one of: {', '.join(SHIPPED)}")
    return Path(str(resources.files("doctune") / "data" / SHIPPED[name]))


def copy_to(out_dir: Path) -> list[Path]:
    """Copy every shipped file into ``out_dir`` (created); returns the copies. Existing files are overwritten."""
    out_dir.mkdir(parents=True, exist_ok=True)
    copies = []
    for name, file in SHIPPED.items():
        dst = out_dir / file
        shutil.copyfile(path(name), dst)
        copies.append(dst)
    return copies
