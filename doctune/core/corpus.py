"""Where doctune's Zig documents are.

Shipped with the package (doctune's own writing, package data in ``doctune/core/data``):

- ``zig-sample.md`` (``sample``): a short Zig 0.14 tour written for ``doctune demo``, every example annotated with its
  expected result.
- ``zig-stale.md`` (``stale``): notes from an older tutorial whose examples no longer compile with 0.14 (the demo
  shows them rejected with the compiler's message).

Not shipped: the Zig 0.14.0 language reference and its annotated examples (``langref``, ``examples``) are Zig's own
documentation, used as data and never copied into this project. They are looked up in ``$DOCTUNE_CORPUS_DIR`` when it
is set, else in ``../shared/corpus`` beside a source checkout.

Defines ``SHIPPED``, ``REFERENCE``, ``path(name)``, ``reference_dir()`` and ``copy_to(dir)``.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from doctune.core.errors import InputError

SHIPPED = {"sample": "zig-sample.md", "stale": "zig-stale.md"}
REFERENCE = {"langref": "zig-0.14.0-langref.md", "examples": "langref-examples.jsonl"}
ENV = "DOCTUNE_CORPUS_DIR"


def reference_dir() -> Path | None:
    """The folder holding the language reference files, or None when there is none."""
    if os.environ.get(ENV):  # explicit: only there
        folder = Path(os.environ[ENV]).expanduser()
    else:
        folder = Path(__file__).resolve().parents[2] / "shared" / "corpus"  # beside a source checkout
    return folder if (folder / REFERENCE["langref"]).is_file() else None


def path(name: str) -> Path:
    """The file for a short name (``sample``, ``stale``, ``langref``, ``examples``)."""
    if name in SHIPPED:
        return Path(str(resources.files("doctune.core") / "data" / SHIPPED[name]))
    if name not in REFERENCE:
        raise InputError(f"unknown corpus file {name!r}; one of: {', '.join([*SHIPPED, *REFERENCE])}")
    folder = reference_dir()
    if folder is None:
        raise InputError(
            f"the Zig 0.14.0 language reference is not shipped with doctune (it is Zig's own documentation): "
            f"set {ENV} to a folder holding {REFERENCE['langref']} and {REFERENCE['examples']}"
        )
    return folder / REFERENCE[name]


def copy_to(out_dir: Path) -> list[Path]:
    """Copy the shipped files into ``out_dir`` (created); returns the copies. Existing files are overwritten."""
    out_dir.mkdir(parents=True, exist_ok=True)
    copies = []
    for name, file in SHIPPED.items():
        dst = out_dir / file
        shutil.copyfile(path(name), dst)
        copies.append(dst)
    return copies
