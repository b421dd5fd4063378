"""Shared CLI plumbing: the Rich console, settings from CLI options, clean error exits."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from doctune.app.console import console, out
from doctune.core.errors import DoctuneError

__all__ = ["ConfigOpt", "console", "fail", "out", "run_cli", "settings_from"]


def _click_exceptions() -> Any:
    """The click exceptions module Typer raises from: typer >= 0.29 carries its own copy (``typer._click``), older
    typer uses ``click``. ``typer.BadParameter`` always comes from the right one."""
    import importlib

    return importlib.import_module(typer.BadParameter.__module__)


def run_cli(app: typer.Typer, argv: list[str] | None = None) -> int:
    """Run the Typer app; turn usage errors, our errors and Ctrl-C into one line and a clean exit code
    (0 for help, 2 for a usage or user error, 130 for Ctrl-C)."""
    ce = _click_exceptions()
    try:
        app(args=argv, prog_name="doctune", standalone_mode=False)
    except DoctuneError as e:
        error_line(str(e))
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/] (re-run the same command to resume)")
        return 130
    except (typer.Exit, getattr(ce, "Exit", typer.Exit)) as e:  # older typer: click's Exit/Abort
        return int(e.exit_code or 0)
    except (typer.Abort, getattr(ce, "Abort", typer.Abort)):
        return 1
    except ce.ClickException as e:
        return _usage_error(e, ce)
    return 0


def _usage_error(e: Any, ce: Any) -> int:
    """A bare command group (``doctune``) prints its help; any other usage error is one line."""
    ctx = getattr(e, "ctx", None)
    if isinstance(e, getattr(ce, "NoArgsIsHelpError", ())) and ctx is not None:
        out.print(ctx.get_help(), highlight=False, markup=False, soft_wrap=True)
        return 0
    where = ctx.command_path if ctx is not None else "doctune"
    hint = f" (see `{where} --help`)" if isinstance(e, ce.UsageError) else ""
    from rich.text import Text

    console.print(Text.assemble(("error:", "bold red"), f" {e.format_message()}{hint}"), soft_wrap=True)
    return 2 if isinstance(e, ce.UsageError) else int(getattr(e, "exit_code", 1) or 1)


def settings_from(config: Path | None, **overrides: Any) -> Any:
    """Load settings with CLI overrides given as nested dicts (None = not given on the command line)."""
    from doctune.core.settings import load_settings

    return load_settings(config, **overrides)


def error_line(msg: str) -> None:
    """`error: msg` on stderr; the message is text, never markup (`pip install 'doctune[postgres]'`, a file
    named `notes[draft].md`)."""
    from rich.text import Text

    console.print(Text.assemble(("error:", "bold red"), f" {msg}"), highlight=False, soft_wrap=True)


def fail(msg: str) -> None:
    error_line(msg)
    sys.exit(2)


ConfigOpt = typer.Option(None, "--config", "-c", help="TOML settings file.", exists=False)
