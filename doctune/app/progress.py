"""Progress of a pipeline run, fed by LangGraph's streamed node updates (to stderr).

On a terminal: Rich bars, one per stage. Off a terminal (output redirected to a file, CI, ``nohup``): Rich would
print its bars only at the end, so plain lines instead -- one per finished stage, one per section every
``interval_s`` at most, and a heartbeat every ``interval_s`` while a long step (training, evaluation) sends no
update at all.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from doctune.app.console import console

_STAGES = ("split", "curate", "export", "train", "evaluate")
_NEXT = {"start": "split", "split": "sections", "section": "sections", "curate": "export", "export": "train (if enabled)",
         "train": "evaluate", "evaluate": "done"}


class RunProgress:
    """One bar per stage (terminal) or periodic plain lines (anything else); same calls either way."""

    def __init__(self, enabled: bool = True, *, plain: bool | None = None, interval_s: float = 30.0):
        self.enabled = enabled
        self.plain = (not console.is_terminal) if plain is None else plain
        self.interval_s = interval_s
        self.progress = Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled or self.plain,
        )
        self.tasks: dict[str, Any] = {}
        self.accepted = 0
        self.rejected = 0
        self.done = 0
        self.total: int | None = None
        self.last_stage = "start"
        self._t0 = time.monotonic()
        self._last_line = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> RunProgress:
        self.progress.__enter__()
        self.tasks["sections"] = self.progress.add_task("sections", total=None, info="")
        self._t0 = self._last_line = time.monotonic()
        if self.enabled and self.plain:
            self._beat = threading.Thread(target=self._heartbeat, name="doctune-progress", daemon=True)
            self._beat.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        self.progress.__exit__(*exc)

    def sections_done(self, n: int, total: int | None) -> None:
        """Resumed run: show the sections finished before the interruption."""
        if total:
            self.total = total
            self.progress.update(self.tasks["sections"], total=total)
        if n:
            self.done = n
            self.progress.update(self.tasks["sections"], completed=n, info="(resumed)")
            self._line(f"resumed: {n} sections already done")

    def on_update(self, update: dict[str, Any]) -> None:
        """One run-level node update (LangGraph ``stream_mode="updates"``)."""
        for node, value in update.items():
            if node == "split" and value:
                self.total = len(value.get("section_ids", []))
                self.progress.update(self.tasks["sections"], total=self.total)
                self.last_stage = "split"
                self._line(f"split: {self.total} sections")
            elif node == "section" and value:
                for r in value.get("results", []):
                    self.accepted += len(r["accepted"])
                    self.rejected += len(r["rejected"])
                self.done += 1
                self.last_stage = "section"
                info = f"[green]{self.accepted} accepted[/] [red]{self.rejected} rejected[/]"
                self.progress.update(self.tasks["sections"], advance=1, info=info)
                if self.done == self.total or time.monotonic() - self._last_line >= self.interval_s:
                    self._line(self._sections_text())
            elif node in _STAGES:
                t = self.progress.add_task(node, total=1, info="")
                self.progress.update(t, completed=1)
                self.last_stage = node
                self._line(f"{node}: done")

    def _sections_text(self) -> str:
        return f"sections {self.done}/{self.total or '?'}: {self.accepted} accepted, {self.rejected} rejected"

    def _line(self, text: str) -> None:
        if not (self.enabled and self.plain):
            return
        with self._lock:
            elapsed = int(time.monotonic() - self._t0)
            console.print(f"[{elapsed // 60:d}:{elapsed % 60:02d}] {text}", markup=False, highlight=False,
                          soft_wrap=True)
            self._last_line = time.monotonic()

    def _heartbeat(self) -> None:
        """A line every ``interval_s`` without news, so a redirected log never goes quiet for long."""
        while not self._stop.wait(min(self.interval_s, 5.0)):
            if time.monotonic() - self._last_line >= self.interval_s:
                self._line(f"working on {_NEXT.get(self.last_stage, self.last_stage)} ({self._sections_text()})")
