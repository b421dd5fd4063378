"""`doctune corpus`: where the shipped Zig documents are, or a copy of them in a folder of your choice."""

from __future__ import annotations

from pathlib import Path

import typer

from doctune.cli.common import console


def register(app: typer.Typer) -> None:
    @app.command()
    def corpus(
        out_dir: Path | None = typer.Option(None, "--out", "-o", help="Copy the files into this folder."),
    ) -> None:
        """Print the paths of the shipped Zig docs (sample, 0.14.0 language reference, its examples as JSONL)."""
        from doctune import corpus as shipped

        if out_dir is None:
            for name in shipped.SHIPPED:
                typer.echo(f"{name}\t{shipped.path(name)}")  # tab-separated for scripts (Rich would expand it)
            return
        for p in shipped.copy_to(out_dir):
            typer.echo(str(p))
        console.print(f"copied {len(shipped.SHIPPED)} files to {out_dir}/ (the Zig docs are MIT: LICENSE-zig.txt)")
