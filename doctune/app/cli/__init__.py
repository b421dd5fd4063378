"""The `doctune` command line (Typer + Rich). One module per command group; errors end as one clean line."""

from __future__ import annotations

import importlib
import sys

import typer

from doctune.app.cli.common import console, out, run_cli

app = typer.Typer(
    name="doctune",
    help="Docs -> compiler-verified instruction dataset -> LoRA fine-tune, with the gain measured.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: typer >= 0.29's Rich panels label every flag `<bool>` (even --help), as if it took a value.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from doctune import __version__

        out.print(f"doctune {__version__}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Docs -> compiler-verified instruction dataset -> LoRA fine-tune, with the gain measured."""

# Each module defines `register(app)`. Keep this list in README's order.
_COMMAND_MODULES = ["split", "validate", "run", "status", "export", "train", "evaluate", "serve", "demo", "corpus"]


def _register() -> None:
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"doctune.app.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"doctune.app.cli.{name}":
                continue  # command group not built yet
            raise
        mod.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_cli(app))


__all__ = ["app", "console", "main"]
