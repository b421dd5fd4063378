"""`doctune run` (the main job) and `doctune demo` (the main job on the shipped sample doc)."""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from doctune.cli.common import console, out, settings_from
from doctune.runner import RunSummary, run_pipeline

DEMO_EVAL_TASKS = 12  # eval tasks in `doctune demo` (base and tuned each answer every one)
DEMO_MAX_NEW_TOKENS = 320  # enough for the short programs the tasks ask for

SAMPLE_DOC = "zig-sample.md"


def sample_doc_path() -> Path:
    return Path(str(resources.files("doctune") / "data" / SAMPLE_DOC))


def _overrides(
    generator: str | None,
    model: str | None,
    concurrency: int | None,
    executor: str | None,
    unsafe_no_sandbox: bool,
    train: bool | None,
) -> dict[str, Any]:
    return {
        "generator": {"kind": generator, "concurrency": concurrency},
        "llm": {"model": model},
        "validator": {
            "executor": executor,
            "unsafe_no_sandbox": True if unsafe_no_sandbox else None,
            "sandbox": "none" if unsafe_no_sandbox else None,
        },
        "train": {"enabled": train},
    }


def print_summary(s: RunSummary, out_dir: Path) -> None:
    t = Table(title=f"doctune run {s.run_id} ({s.status.replace('_', ' ')})", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("generator", s.generator)
    t.add_row("sections", f"{s.sections} processed of {s.sections_total} found")
    t.add_row("pairs generated", str(s.generated))
    t.add_row("accepted", f"[green]{s.accepted}[/]")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.reasons.items())) or "-"
    t.add_row("rejected", f"[red]{s.rejected}[/] ({reasons})")
    t.add_row("failed sections", str(s.failed_sections))
    t.add_row("accepted after k repairs", ", ".join(f"{k}: {v}" for k, v in s.repairs.items()) or "-")
    if s.tokens.get("input") or s.tokens.get("output"):
        t.add_row("tokens in/out", f"{s.tokens['input']} / {s.tokens['output']}")
    if s.export:
        t.add_row("dataset", f"{s.export['dataset_path']} (train {s.export['splits']['train']}, "
                  f"test {s.export['splits']['test']})")
        t.add_row("pairs / rejected", f"{s.export['pairs_path']} / {s.export['rejected_path']}")
    if s.evaluation.get("report"):
        t.add_row("eval report", str(s.evaluation["report"]))
    t.add_row("wall time", f"{s.wall_s:.1f} s")
    console.print(t)
    if s.failed_sections:
        console.print(f"[yellow]warning:[/] {s.failed_sections} section(s) failed (see `doctune status "
                      f"{out_dir}`); once the cause is fixed, `doctune retry {out_dir}` re-runs only those")


def preflight(docs: list[str], settings: Any) -> None:
    """Check the inputs and the LLM endpoint before anything is written: a bad doc, an unreachable endpoint or a
    refused key ends the command with one line and leaves no run state behind (so a fixed re-run starts clean)."""
    from doctune.agents.generator import generator_kind
    from doctune.agents.splitter import split_paths

    split_paths(docs, settings.split)
    if generator_kind(settings) == "llm":
        check_endpoint(settings.llm)


def check_endpoint(llm: Any) -> None:
    """GET {base_url}/models once: connection failures and 401/403 are fatal; any other answer is left to the
    run (some OpenAI-compatible servers have no /models route)."""
    import httpx

    from doctune.errors import ConfigError, EndpointError

    base_url = llm.resolved_base_url()
    if not base_url:
        raise ConfigError("llm.base_url is not set: set it in the config file or export OPENAI_BASE_URL")
    key = llm.resolved_api_key()
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    try:
        resp = httpx.get(base_url.rstrip("/") + "/models", headers=headers, timeout=min(llm.timeout_s, 15.0))
    except httpx.HTTPError as e:
        raise EndpointError(
            f"cannot reach the LLM endpoint {base_url} ({type(e).__name__}); check llm.base_url / OPENAI_BASE_URL"
        ) from None
    if resp.status_code == 401:
        raise EndpointError(f"{base_url} refused the API key (401): set llm.api_key or OPENAI_API_KEY")
    if resp.status_code == 403:
        raise EndpointError(f"{base_url} denied access (403) with this API key")


def _execute(docs: list[str], out_dir: Path, settings: Any, max_sections: int | None, as_json: bool) -> None:
    preflight(docs, settings)
    summary = asyncio.run(run_pipeline(docs, out_dir, settings, max_sections=max_sections))
    print_summary(summary, out_dir)
    if as_json:
        out.print_json(json.dumps(summary.to_json(), default=str))


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        docs: list[str] = typer.Argument(..., help="Markdown/MDX files or folders."),
        out_dir: Path = typer.Option(..., "--out", "-o", help="Output directory (state, dataset, reports)."),
        max_sections: int | None = typer.Option(None, "--max-sections", min=1, help="First N sections only."),
        config: Path | None = typer.Option(None, "--config", "-c", help="TOML settings file."),
        generator: str | None = typer.Option(None, "--generator", help="auto | doc-examples | llm"),
        model: str | None = typer.Option(None, "--model", help="LLM model name (llm generator)."),
        concurrency: int | None = typer.Option(None, "--concurrency", min=1, help="LLM requests in flight (generator.concurrency)."),
        executor: str | None = typer.Option(None, "--executor", help="local | codapi"),
        unsafe_no_sandbox: bool = typer.Option(False, "--unsafe-no-sandbox", help="Run code without bwrap."),
        train: bool | None = typer.Option(None, "--train/--no-train", help="Train + evaluate after export."),
        as_json: bool = typer.Option(False, "--json", help="Also print the summary as JSON on stdout."),
    ) -> None:
        """Split DOCS, generate pairs, validate every Zig block, curate and export the dataset."""
        settings = settings_from(
            config, **_overrides(generator, model, concurrency, executor, unsafe_no_sandbox, train)
        )
        _execute(docs, out_dir, settings, max_sections, as_json)

    @app.command()
    def demo(
        out_dir: Path = typer.Option(Path("out/demo"), "--out", "-o", help="Output directory."),
        train: bool = typer.Option(True, "--train/--no-train", help="CPU train + before/after eval."),
        unsafe_no_sandbox: bool = typer.Option(False, "--unsafe-no-sandbox", help="Run code without bwrap."),
    ) -> None:
        """The main job on the shipped sample Zig doc, offline (no API key, no GPU)."""
        overrides = _overrides("doc-examples", None, None, None, unsafe_no_sandbox, train)
        if train:
            overrides["train"].update(preset="cpu-smollm2")
            # A slice of the eval set (both sources, every topic it can reach) and short answers: the whole demo,
            # train + before/after eval included, stays within ~15 min on a 2-core CPU.
            overrides["eval"] = {"max_tasks": DEMO_EVAL_TASKS, "max_new_tokens": DEMO_MAX_NEW_TOKENS}
        settings = settings_from(None, **overrides)
        console.print(f"[bold]doctune demo[/]: {sample_doc_path()} -> {out_dir}")
        _execute([str(sample_doc_path())], out_dir, settings, None, False)
