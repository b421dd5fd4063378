"""The `doctune` command line (Typer + Rich). One module per command group; errors end as one clean line."""

from __future__ import annotations

import importlib
import sys

import typer

from doctune.cli.common import console, run_cli

app = typer.Typer(
    name="doctune",
    help="Docs -> compiler-verified instruction dataset -> LoRA fine-tune, with the gain measured.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines `register(app)`. Keep this list in README's order.
_COMMAND_MODULES = ["split", "validate", "run", "status", "train", "evaluate", "serve"]


def _register() -> None:
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"doctune.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"doctune.cli.{name}":
                continue  # command group not built yet
            raise
        mod.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_cli(app))


__all__ = ["app", "console", "main"]
