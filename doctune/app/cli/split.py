"""`doctune split`: Markdown/MDX files or folders -> sections JSONL, with a summary table on stderr."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from doctune.app.cli.common import ConfigOpt, console, settings_from
from doctune.core.errors import InputError

Docs = Annotated[list[Path], typer.Argument(help="Markdown/MDX files or folders (searched recursively).")]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Sections JSONL to write (default: stdout).")]
MaxDepth = Annotated[int | None, typer.Option(help="Deepest heading level that starts a section (3 = ###).")]
MinChars = Annotated[int | None, typer.Option(help="Merge sections shorter than this into a neighbour.")]
MaxChars = Annotated[
    int | None, typer.Option(help="Split sections longer than this at paragraph/fence boundaries.")
]


def split(
    docs: Docs,
    out: Out = None,
    max_depth: MaxDepth = None,
    min_chars: MinChars = None,
    max_chars: MaxChars = None,
    config: Path | None = ConfigOpt,
) -> None:
    """Split documents into sections at headings (never inside code fences) and write one JSON per line."""
    from doctune.agents.split_stats import stats_table, summarize
    from doctune.agents.splitter import split_paths

    settings = settings_from(
        config, split={"max_depth": max_depth, "min_chars": min_chars, "max_chars": max_chars}
    )
    sections = split_paths(docs, settings.split)
    lines = "".join(s.model_dump_json() + "\n" for s in sections)
    if out is None:
        sys.stdout.write(lines)
    else:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(lines, encoding="utf-8")
            tmp.replace(out)  # atomic: a failed run never leaves a truncated sections file
        except OSError as e:
            raise InputError(f"cannot write {out}: {e.strerror or e}") from None
    console.print(stats_table(summarize(sections)))
    if out is not None:
        console.print(f"wrote {len(sections)} sections to {out}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("split")(split)
