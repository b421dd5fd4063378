"""Shared CLI plumbing: the Rich console, settings from CLI options, clean error exits."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from doctune.errors import DoctuneError

console = Console(stderr=True)  # progress and tables go to stderr; stdout stays for machine output (JSON)
out = Console()


def run_cli(app: typer.Typer) -> int:
    """Run the Typer app; turn our errors (and Ctrl-C) into one line and a non-zero exit code."""
    try:
        app(standalone_mode=False)
    except DoctuneError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/] (re-run the same command to resume)")
        return 130
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        return 1
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        if isinstance(e, click.exceptions.Exit):
            return e.exit_code
        if isinstance(e, click.exceptions.Abort):
            return 1
        raise
    return 0


def settings_from(config: Path | None, **overrides: Any) -> Any:
    """Load settings with CLI overrides given as nested dicts (None = not given on the command line)."""
    from doctune.settings import load_settings

    return load_settings(config, **overrides)


def fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    sys.exit(2)


ConfigOpt = typer.Option(None, "--config", "-c", help="TOML settings file.", exists=False)
