"""The app's two Rich consoles: `console` (stderr: progress, tables, errors) and `out` (stdout: machine output,
e.g. JSON). Shared by the CLI and the run progress, so neither imports the other."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True)  # progress and tables go to stderr; stdout stays for machine output (JSON)
out = Console()
