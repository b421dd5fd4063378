"""Rich progress for a pipeline run, fed by LangGraph's streamed node updates (to stderr)."""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from doctune.cli.common import console

_STAGES = ("split", "curate", "export", "train", "evaluate")


class RunProgress:
    """One bar per stage; the sections bar advances as each section branch finishes."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self.tasks: dict[str, Any] = {}
        self.accepted = 0
        self.rejected = 0

    def __enter__(self) -> RunProgress:
        self.progress.__enter__()
        self.tasks["sections"] = self.progress.add_task("sections", total=None, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def sections_done(self, n: int, total: int | None) -> None:
        """Resumed run: show the sections finished before the interruption."""
        if total:
            self.progress.update(self.tasks["sections"], total=total)
        if n:
            self.progress.update(self.tasks["sections"], completed=n, info="(resumed)")

    def on_update(self, update: dict[str, Any]) -> None:
        """One run-level node update (LangGraph ``stream_mode="updates"``)."""
        for node, value in update.items():
            if node == "split" and value:
                self.progress.update(self.tasks["sections"], total=len(value.get("section_ids", [])))
            elif node == "section" and value:
                for r in value.get("results", []):
                    self.accepted += len(r["accepted"])
                    self.rejected += len(r["rejected"])
                info = f"[green]{self.accepted} accepted[/] [red]{self.rejected} rejected[/]"
                self.progress.update(self.tasks["sections"], advance=1, info=info)
            elif node in _STAGES:
                t = self.progress.add_task(node, total=1, info="")
                self.progress.update(t, completed=1)
