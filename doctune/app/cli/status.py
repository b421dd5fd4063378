"""`doctune status RUN_DIR [--json]` and `doctune retry RUN_DIR [--section ID] [--model M] [--set key=value]`.

Display only: the lifecycle (what a run's checkpoint says, how a retry is done, with which settings) is
`doctune.graph.lifecycle`. `--json` prints the stable object `{"run_id", "state", "sections": {"total", "done",
"failed", "pending"}, "pairs": {"accepted", "rejected"}, "tokens": {"input", "output"}, "failed": [{"section_id",
"heading_path", "error"}], "pending": [heading paths], "attempts": [...], "yield": {"sources": [...], "sections":
[...]}}` (yield rows: `doctune.agents.dataset_yield.Yield.to_json`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from doctune.agents.dataset_yield import evidence_text
from doctune.app.cli.common import console, out, settings_from
from doctune.graph.runstatus import RunStatus

SECTION_ROWS = 20  # sections shown in the yield table (--json lists all)
STATE_TEXT = {"completed_with_failures": "completed with failures", "not_started": "not started"}


def print_status(s: RunStatus, run_dir: Path, by_id: bool = False) -> None:
    t = Table(title=f"doctune run {s.run_id} ({STATE_TEXT.get(s.state, s.state)})", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("sections", f"{s.total} total: [green]{s.done} done[/], [red]{s.failed} failed[/], {s.pending} pending")
    t.add_row("pairs", f"[green]{s.accepted} accepted[/], [red]{s.rejected} rejected[/]")
    t.add_row("tokens in/out", f"{s.tokens['input']} / {s.tokens['output']}")
    for f in s.failures[:10]:
        t.add_row(f"failed: {f['heading_path']}", f["error"])
    if len(s.failures) > 10:
        t.add_row("", f"... and {len(s.failures) - 10} more (--json lists all)")
    if s.attempts:
        last = s.attempts[-1]
        who = last["generator"] + (f" ({last['model']})" if last.get("model") else "")
        t.add_row("attempts", f"{len(s.attempts)}; last: {last['command']} with {who}, {last['outcome']}")
    for src in s.yields.get("sources", []):
        t.add_row(f"yield: {src['source']}", yield_text(src))
    console.print(t, highlight=False)
    print_section_yields(s.yields.get("sections", []))
    if s.state == "interrupted" or s.failed:
        by = f" --run-id {s.run_id}" if by_id else ""
        console.print(f"re-run only what is missing: [bold]doctune retry {run_dir}{by}[/] [--section ID]",
                      highlight=False)


def yield_text(row: dict) -> str:
    """'3 sections, 7 generated -> 5 accepted (tested 2, ran 3), 2 rejected; 1 repaired (2 rounds)'."""
    failed = f" ({row['failed']} failed)" if row["failed"] else ""
    return (f"{row['sections']} section(s){failed}, {row['generated']} generated -> {row['accepted']} accepted "
            f"({evidence_text(row['evidence'])}), {row['rejected']} rejected; {row['repaired']} repaired "
            f"({row['repairs']} rounds)")


def print_section_yields(rows: list[dict], limit: int = SECTION_ROWS) -> None:
    """Per section: generated -> accepted by evidence -> repairs (the first ``limit``; --json lists all)."""
    if not rows:
        return
    t = Table(title="yield by section")
    for col in ("section", "generated", "accepted (by evidence)", "rejected", "repaired (rounds)"):
        t.add_column(col)
    for r in rows[:limit]:
        t.add_row(r["heading_path"] + (" [red](failed)[/]" if r["failed"] else ""), str(r["generated"]),
                  f"{r['accepted']}: {evidence_text(r['evidence'])}", str(r["rejected"]),
                  f"{r['repaired']} ({r['repairs']})")
    if len(rows) > limit:
        t.add_row(f"... and {len(rows) - limit} more (--json lists all)", "", "", "", "")
    console.print(t, highlight=False)


RunDir = Annotated[Path, typer.Argument(help="The run's output directory (has run.json; with --run-id, any).")]
Config = Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file (checkpoint.url only).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
SectionOpt = Annotated[str | None, typer.Option("--section", help="Retry only this failed or pending section (id).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Retry with this model (recorded as a change).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Change a setting of record: section.key=value.")]
RunIdOpt = Annotated[str | None, typer.Option("--run-id", help="A run of the checkpoint database (Postgres: "
                                              "DOCTUNE_CHECKPOINT__URL), for a directory without its run.json.")]


def status(run_dir: RunDir, as_json: AsJson = False, config: Config = None, run_id: RunIdOpt = None) -> None:
    """Sections done/failed/pending (by heading), pairs, tokens and attempts of a run, even a crashed one."""
    from doctune.app.runner import status as run_status

    url = settings_from(config).checkpoint.url
    s = run_status(run_dir, url, run_id=run_id)
    if as_json:
        out.print_json(json.dumps(s.to_json()))
    else:
        print_status(s, run_dir, by_id=run_id is not None)


def retry(run_dir: RunDir, section: SectionOpt = None, model: ModelOpt = None, set_: SetOpt = None,
          config: Config = None, as_json: AsJson = False, run_id: RunIdOpt = None) -> None:
    """Re-run only the failed (or unfinished) sections with the run's own settings, then re-export.

    Any change (--model, --set) is explicit and recorded in the run's history (run.json `attempts`)."""
    from doctune.app.cli.run import interruptible, print_summary
    from doctune.app.runner import retry as run_retry
    from doctune.graph.runrecord import parse_changes

    changes = parse_changes(list(set_ or []))
    if model:
        changes.setdefault("llm", {})["model"] = model
    url = settings_from(config).checkpoint.url
    summary = interruptible(lambda: run_retry(run_dir, section=section, changes=changes, checkpoint_url=url,
                                              run_id=run_id, show_progress=True))
    if summary is None:
        console.print("nothing to retry: every section finished without error")
        return
    print_summary(summary, run_dir)
    if as_json:
        out.print_json(json.dumps(summary.to_json(), default=str))


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("retry")(retry)
