"""`doctune corpus`: where the Zig documents are (shipped ones, and the language reference if found), or a copy of
the shipped ones in a folder of your choice."""

from __future__ import annotations

from pathlib import Path

import typer

from doctune.app.cli.common import console


def register(app: typer.Typer) -> None:
    @app.command()
    def corpus(
        out_dir: Path | None = typer.Option(None, "--out", "-o", help="Copy the files into this folder."),
    ) -> None:
        """Print the paths of the Zig docs: the shipped sample/stale docs, and the language reference if found."""
        from doctune.core import corpus as shipped

        if out_dir is None:
            for name in shipped.SHIPPED:
                typer.echo(f"{name}\t{shipped.path(name)}")  # tab-separated for scripts (Rich would expand it)
            ref = shipped.reference_dir()
            for name, file in shipped.REFERENCE.items():
                typer.echo(f"{name}\t{ref / file}" if ref else f"{name}\t(not found: set {shipped.ENV})")
            return
        for p in shipped.copy_to(out_dir):
            typer.echo(str(p))
        console.print(f"copied {len(shipped.SHIPPED)} files to {out_dir}/")
