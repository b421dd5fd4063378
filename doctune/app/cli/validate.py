"""`doctune validate`: compile and run Zig blocks (a file, a folder of .zig files, or JSONL) and judge them.

JSONL in: `{"id", "code", "mode"?, "expect"?, "files"?, "options"?, "name"?}` per line. JSONL out, one line per
input in input order: `{"id", "verdict", "expected_met", "stage", "exit_code", "stdout", "stderr",
"duration_s", "cached", "mode", "compiled_only"}`. Exit code 1 when any block failed (an expectation not met,
or a block without expectation that is not ok), unsupported blocks excepted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from doctune.app.cli.common import ConfigOpt, console, settings_from
from doctune.core.errors import InputError

if TYPE_CHECKING:
    from doctune.agents.validator import BlockInput
    from doctune.core.schemas import Verdict

Target = Annotated[Path | None, typer.Argument(help="A .zig file or a folder of .zig files.")]
JsonlIn = Annotated[
    Path | None, typer.Option("--jsonl", help="Blocks to validate, one JSON object per line.")
]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Verdicts JSONL to write (default: stdout).")]
ExecutorOpt = Annotated[str | None, typer.Option("--executor", help="Where code runs: local | codapi.")]
ConcurrencyOpt = Annotated[
    int | None, typer.Option("--concurrency", "-j", help="Parallel jobs (default: cores).")
]
ModeOpt = Annotated[str, typer.Option("--mode", help="auto | run | test | obj (file/folder input).")]
UnsafeOpt = Annotated[
    bool, typer.Option("--unsafe-no-sandbox", help="Allow running untrusted code without bubblewrap.")
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the verdict cache.")]
FastOpt = Annotated[bool, typer.Option("--fast-backend", help="Compile with -fno-llvm -fno-lld (opt-in).")]

OUT_FIELDS = ("verdict", "expected_met", "stage", "exit_code", "stdout", "stderr", "duration_s", "cached")


def validate(
    target: Target = None,
    jsonl: JsonlIn = None,
    out: Out = None,
    executor: ExecutorOpt = None,
    concurrency: ConcurrencyOpt = None,
    mode: ModeOpt = "auto",
    unsafe_no_sandbox: UnsafeOpt = False,
    no_cache: NoCacheOpt = False,
    fast_backend: FastOpt = False,
    config: Path | None = ConfigOpt,
) -> None:
    """Compile and run Zig code in a sandbox and print verdicts (JSON for one file, JSONL otherwise)."""
    if (target is None) == (jsonl is None):
        raise InputError("give either a .zig file/folder or --jsonl IN.jsonl")
    if executor not in (None, "local", "codapi"):
        raise InputError(f"--executor must be local or codapi, not {executor!r}")
    if concurrency is not None and concurrency < 1:
        raise InputError(f"--concurrency must be at least 1, not {concurrency}")
    if mode not in ("auto", "run", "test", "obj"):
        raise InputError(f"--mode must be auto, run, test or obj, not {mode!r}")
    overrides = {
        "executor": executor,
        "concurrency": concurrency,
        "unsafe_no_sandbox": True if unsafe_no_sandbox else None,
        "sandbox": "none" if unsafe_no_sandbox else None,
        "cache": False if no_cache else None,
        "fast_backend": True if fast_backend else None,
    }
    settings = settings_from(config, validator=overrides)
    blocks = read_jsonl(jsonl) if jsonl is not None else read_zig(target, mode)  # type: ignore[arg-type]
    if not blocks:
        raise InputError("nothing to validate (no blocks found)")
    t0 = time.monotonic()
    verdicts = asyncio.run(_validate_all(settings.validator, blocks))
    wall = time.monotonic() - t0
    single = jsonl is None and target is not None and target.is_file()
    write_output(blocks, verdicts, out, single=single)
    console.print(summary_table(verdicts, wall))
    failed = [v for v in verdicts if not v.passed and v.verdict != "unsupported"]
    if failed:
        sys.exit(1)  # not typer.Exit: run_cli ignores the return value of a non-standalone Typer call


async def _validate_all(vs: object, blocks: list[BlockInput]) -> list[Verdict]:
    from doctune.agents.validator import Validator

    validator = Validator(vs)  # type: ignore[arg-type]
    try:
        with Progress(
            TextColumn("validate"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[last]}"),
            console=console,
            transient=len(blocks) == 1,
        ) as progress:
            task = progress.add_task("validate", total=len(blocks), last="")

            def done(i: int, v: Verdict) -> None:
                progress.update(task, advance=1, last=f"{blocks[i].id}: {v.verdict}")

            return await validator.validate_many(blocks, on_done=done)
    finally:
        await validator.aclose()


def read_jsonl(path: Path) -> list[BlockInput]:
    from pydantic import ValidationError

    from doctune.agents.validator import BlockInput

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    blocks: list[BlockInput] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            blocks.append(BlockInput.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as e:
            first = str(e).splitlines()[0] if isinstance(e, json.JSONDecodeError) else _pyd_error(e)
            raise InputError(f"{path}:{n}: not a valid block: {first}") from None
    ids = Counter(b.id for b in blocks)
    if dup := [i for i, c in ids.items() if c > 1]:
        raise InputError(f"{path}: duplicate ids: {', '.join(dup[:5])}")
    return blocks


def _pyd_error(e: object) -> str:
    errs = e.errors()  # type: ignore[attr-defined]
    return "; ".join(f"{'.'.join(map(str, x['loc'])) or 'line'}: {x['msg']}" for x in errs[:3])


def read_zig(target: Path, mode: str) -> list[BlockInput]:
    from doctune.agents.validator import BlockInput

    if target.is_dir():
        paths = sorted(target.rglob("*.zig"))
    elif target.is_file():
        paths = [target]
    else:
        raise InputError(f"no such file or folder: {target}")
    blocks = []
    for p in paths:
        try:
            code = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read {p}: {getattr(e, 'strerror', None) or e}") from None
        rid = str(p.relative_to(target)) if target.is_dir() else p.name
        blocks.append(BlockInput(id=rid, code=code, mode=mode, name=p.name))
    return blocks


def verdict_line(block: BlockInput, v: Verdict) -> dict[str, object]:
    data = v.model_dump()
    return {
        "id": block.id,
        **{k: data[k] for k in OUT_FIELDS},
        "mode": v.mode,
        "compiled_only": v.compiled_only,
    }


def write_output(
    blocks: list[BlockInput], verdicts: list[Verdict], out: Path | None, *, single: bool
) -> None:
    if single and out is None:
        sys.stdout.write(json.dumps(verdict_line(blocks[0], verdicts[0]), indent=2) + "\n")
        return
    lines = "".join(json.dumps(verdict_line(b, v)) + "\n" for b, v in zip(blocks, verdicts, strict=True))
    if out is None:
        sys.stdout.write(lines)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(lines, encoding="utf-8")
        tmp.replace(out)
    except OSError as e:
        raise InputError(f"cannot write {out}: {e.strerror or e}") from None
    console.print(f"wrote {len(verdicts)} verdicts to {out}", highlight=False)


def summary_table(verdicts: list[Verdict], wall_s: float) -> Table:
    table = Table(title="validation summary", show_header=True)
    table.add_column("verdict")
    table.add_column("blocks", justify="right")
    table.add_column("expected met", justify="right")
    table.add_column("cached", justify="right")
    for kind, n in Counter(v.verdict for v in verdicts).most_common():
        group = [v for v in verdicts if v.verdict == kind]
        with_exp = [v for v in group if v.expected_met is not None]
        met = f"{sum(bool(v.expected_met) for v in with_exp)}/{len(with_exp)}" if with_exp else "-"
        table.add_row(kind, str(n), met, str(sum(v.cached for v in group)))
    rate = len(verdicts) / wall_s * 60 if wall_s > 0 else 0.0
    table.caption = f"{len(verdicts)} blocks in {wall_s:.1f} s ({rate:.0f} blocks/min)"
    return table


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
