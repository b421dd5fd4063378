"""Validator throughput: naive one-at-a-time `zig run`/`zig test` vs doctune's validator, on the same blocks.

    python benchmarks/validate.py [--n 64] [--jsonl ../shared/corpus/langref-examples.jsonl] [--fast-backend]
    python benchmarks/validate.py --mixed 48   # 144 blocks, two thirds failing (compile error, wrong answer)

Naive = what a script would do: for each block, write it to a file and call `zig run` / `zig test` /
`zig build-obj`, sequentially, no verdict cache. doctune = `Validator.validate_many` with its defaults
(sandbox, concurrency = cores, batched test blocks, type-check-only for obj). Both start from their own Zig
cache, pre-warmed with one trivial compile (so neither pays the one-off compiler_rt/std build, and neither can
reuse the other's artifacts). Then doctune runs the same blocks again: every verdict comes from the SQLite
cache, ~0 compiles. Prints blocks/min for each and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from doctune.agents.validator import BlockInput, Validator
from doctune.core.settings import ValidatorSettings
from doctune.core.zig import zig_exe
from doctune.executors.local import LocalExecutor

DEFAULT_JSONL = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "langref-examples.jsonl"
WARM = 'const std = @import("std");\npub fn main() void { std.debug.print("warm\\n", .{}); }\ntest "w" {}\n'


def pick_blocks(path: Path, n: int) -> list[dict]:
    """n blocks without build options or sibling files, spread over kinds and outcomes (deterministic)."""
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if not r.get("options") and not r.get("files")]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["mode"], r["expect"]["outcome"])].append(r)
    picked: list[dict] = []
    for key in sorted(groups):
        g = groups[key]
        take = max(1, round(n * len(g) / len(rows)))
        picked += g[:: max(1, len(g) // take)][:take]
    return (
        picked[:n] if len(picked) >= n else picked + [r for r in rows if r not in picked][: n - len(picked)]
    )


def mixed_blocks(path: Path, tasks: int) -> list[dict]:
    """A first-LLM-pass-like set: `tasks` passing langref test/program examples, each as its solution, a
    compile-error variant and a wrong-answer variant (two thirds fail). Every block expects success."""
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    rows = [
        r
        for r in rows
        if r["mode"] in ("test", "run")
        and r["expect"]["outcome"] == "ok"
        and not r.get("options")
        and not r.get("files")
        and _body_start(r["code"], r["mode"]) > 0
    ]
    picked = rows[:: max(1, len(rows) // tasks)][:tasks]
    out: list[dict] = []
    for r in picked:
        at = _body_start(r["code"], r["mode"])
        wrong = (
            'try @import("std").testing.expect(1 + 1 == 3); '
            if r["mode"] == "test"
            else '@panic("wrong answer"); '
        )
        base = {"mode": r["mode"], "name": r.get("name"), "expect": {"outcome": "ok"}}
        out.append({**base, "id": r["id"], "code": r["code"], "want": "ok"})
        broken = r["code"][:at] + "_ = doctune_undeclared_name; " + r["code"][at:]
        out.append({**base, "id": r["id"] + "/compile", "code": broken, "want": "compile_error"})
        out.append(
            {
                **base,
                "id": r["id"] + "/wrong",
                "code": r["code"][:at] + wrong + r["code"][at:],
                "want": "fail",
            }
        )
    return out


def _body_start(code: str, mode: str) -> int:
    """Offset just after the first test's (or main's) opening brace, -1 if none."""
    import re

    pat = r'^test\s*"[^"\n]*"\s*\{' if mode == "test" else r"^pub fn main\(\)[^{\n]*\{"
    m = re.search(pat, code, re.MULTILINE)
    return m.end() if m else -1


def naive(blocks: list[dict], cache: Path) -> float:
    """Sequential zig run/test/build-obj; returns seconds."""
    env = {"ZIG_GLOBAL_CACHE_DIR": str(cache), "ZIG_LOCAL_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin"}
    sub = {"run": ["run"], "test": ["test"], "obj": ["build-obj"]}
    with tempfile.TemporaryDirectory() as d:
        _zig([str(zig_exe()), "run", _write(d, "warm.zig", WARM)], env, d)
        t0 = time.monotonic()
        for i, b in enumerate(blocks):
            f = _write(d, f"{i}_{b.get('name') or 'main.zig'}", b["code"])
            _zig([str(zig_exe()), *sub[b["mode"]], f], env, d)
        return time.monotonic() - t0


def _write(d: str, name: str, code: str) -> str:
    p = Path(d, name.replace(" ", "_"))
    p.write_text(code)
    return str(p)


def _zig(argv: list[str], env: dict[str, str], cwd: str) -> int:
    try:
        return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=120).returncode
    except subprocess.TimeoutExpired:
        return -1


async def doctune_pass(
    validator: Validator, blocks: list[dict]
) -> tuple[float, int, list[tuple[bool | None, str]]]:
    items = [BlockInput.model_validate(b) for b in blocks]
    before = validator.executions
    t0 = time.monotonic()
    verdicts = await validator.validate_many(items)
    return (
        time.monotonic() - t0,
        validator.executions - before,
        [(v.expected_met, v.verdict) for v in verdicts],
    )


async def run_doctune(
    blocks: list[dict], cache: Path, db: Path, fast: bool
) -> tuple[tuple, tuple, Validator]:
    settings = ValidatorSettings(cache_path=db, fast_backend=fast)
    validator = Validator(settings, LocalExecutor(settings, zig_cache=cache))
    await validator.validate(WARM, mode="run")  # warm Zig's cache (then forget the verdict: not timed)
    validator.executions = 0
    try:
        first = await doctune_pass(validator, blocks)
        second = await doctune_pass(validator, blocks)
    finally:
        await validator.aclose()
    return first, second, validator


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jsonl", type=Path, default=DEFAULT_JSONL, help="Blocks (langref-examples format).")
    ap.add_argument("--n", type=int, default=64, help="Number of blocks (>= 60 for the issue's benchmark).")
    ap.add_argument("--fast-backend", action="store_true", help="doctune with -fno-llvm -fno-lld.")
    ap.add_argument(
        "--mixed",
        type=int,
        default=0,
        metavar="TASKS",
        help="Instead: TASKS passing examples x (solution, compile-error, wrong-answer variant).",
    )
    args = ap.parse_args(argv)
    if not args.jsonl.is_file():
        print(f"error: {args.jsonl} not found (pass --jsonl)", file=sys.stderr)
        return 2
    blocks = mixed_blocks(args.jsonl, args.mixed) if args.mixed else pick_blocks(args.jsonl, args.n)
    with tempfile.TemporaryDirectory(prefix="doctune-bench-") as tmp:
        t = Path(tmp)
        print(
            f"{len(blocks)} blocks: "
            + ", ".join(f"{m}={sum(b['mode'] == m for b in blocks)}" for m in ("run", "test", "obj"))
        )
        naive_s = naive(blocks, t / "naive-cache")
        print(
            f"naive   : {naive_s:7.1f} s  {len(blocks) / naive_s * 60:7.1f} blocks/min  ({len(blocks)} compiles)"
        )
        (d_s, d_n, verdicts), (c_s, c_n, _), v = asyncio.run(
            run_doctune(blocks, t / "doctune-cache", t / "verdicts.sqlite", args.fast_backend)
        )
        print(
            f"doctune : {d_s:7.1f} s  {len(blocks) / d_s * 60:7.1f} blocks/min  "
            f"({d_n} compiles, {v.batches} batched)"
        )
        print(f"ratio   : {naive_s / d_s:.1f}x faster than naive")
        print(
            f"cached  : {c_s:7.2f} s  {len(blocks) / max(c_s, 1e-6) * 60:7.0f} blocks/min  ({c_n} compiles)"
        )
        if args.mixed:
            right = sum(
                (m is True) == (b["want"] == "ok") and (b["want"] != "compile_error" or k == "compile_error")
                for b, (m, k) in zip(blocks, verdicts, strict=True)
            )
            print(
                f"verdicts: {right}/{len(blocks)} right (solution ok, variants rejected, compile errors named)"
            )
        else:
            print(
                f"verdicts: {sum(m is True for m, _ in verdicts)}/{len(blocks)} match the annotated outcome"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
