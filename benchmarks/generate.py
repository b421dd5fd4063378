"""Generation benchmark: the original recipe's sequential loop vs doctune's graph at concurrency 16.

Both talk to the same local OpenAI-compatible test server (tests/fakes/openai_server.py) with a fixed latency per
request, over the same sections (Zig 0.14 langref sections, as a generated Markdown doc). The server answers
conceptual pairs only, so no Zig compile runs and the wall times compare the generation loops themselves; the
doctune time is the whole run (preflight with its endpoint probe, split, fan-out, checkpoints, curate, export),
and where it went (before the first generation request, generating, after the last answer). Then the checkpoint
DB size per section at two run sizes (goal: flat, because state holds ids, not text).

With ``--code`` the server answers with Zig programs (tests/fakes/zig_answers: one correct, one with a compile
error that the repair fixes, one conceptual pair per section), so the run generates, compiles, repairs and
compiles again. It reports the run's wall time against the two floors -- N*L/C for the LLM and the validator's
own time for the same blocks, measured in the same invocation by validating them directly -- and the average
number of requests in flight (from the server's own record of its requests).

    python benchmarks/generate.py                     # 200 sections, 0.5 s latency, concurrency 16
    python benchmarks/generate.py --sections 40 --latency 0.2 --sizes 20,80   # quick look
    python benchmarks/generate.py --code --sections 64                        # with code to compile
    python benchmarks/generate.py --code --sections 64 --no-probe             # first-request gate, to compare
    python benchmarks/generate.py --code --sections 64 --cut 15               # generation phase only (~30 s)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test server lives in tests/fakes

from tests.fakes.openai_server import messages_text  # noqa: E402

LANGREF = ROOT.parent / "shared" / "corpus" / "zig-0.14.0-langref.md"
NONCE_ENV = "DOCTUNE_BENCH_NONCE"
_TITLE = re.compile(r'section "(?P<h>[^"]*)"|^## (?P<t>.+)$', re.M)


def make_doc(path: Path, n: int, source: Path) -> None:
    """A Markdown doc of ``n`` sections cut from real langref text (200..4000 characters each, cycled)."""
    from doctune.agents.splitter import split_paths

    bodies = [s for s in split_paths([source]) if 200 <= len(s.text) <= 4000]
    parts = []
    for i in range(n):
        s = bodies[i % len(bodies)]
        text = s.text.split("\n", 1)[1] if s.text.startswith("#") else s.text
        parts.append(f"## {s.title} ({i})\n\n{text.strip()}\n")
    path.write_text("# Benchmark\n\nSections cut from the Zig 0.14.0 language reference.\n\n" + "\n".join(parts))


def responder(body: dict[str, Any]) -> Any:
    """Conceptual pairs about whichever section the prompt names (content-matched, order-free)."""
    user = messages_text(body, "user")
    m = _TITLE.search(user)
    title = (m.group("h") or m.group("t")) if m else "this section"
    pairs = [{"instruction": f"What does '{title}' say, point {k}?", "response": f"It says point {k} about {title}.",
              "kind": "conceptual"} for k in range(3)]
    if "Answer only as JSON lines" in user:  # the recipe's prompt
        return "\n".join(json.dumps({"instruction": p["instruction"], "response": p["response"]}) for p in pairs)
    return {"pairs": pairs}


def code_responder(body: dict[str, Any]) -> Any:
    """Answers with Zig code (tests/fakes/zig_answers: a correct program, one with a compile error that the
    repair prompt fixes, a conceptual pair). Every block carries this benchmark's nonce, so no earlier run's
    Zig cache or verdict cache answers for it."""
    from tests.fakes.zig_answers import responder as zig_responder

    tag = f"// doctune benchmark {os.environ.get(NONCE_ENV, '')}\n"

    def mark(x: Any) -> Any:
        if isinstance(x, str):
            return x.replace("```zig\n", "```zig\n" + tag)
        if isinstance(x, dict):
            return {k: mark(v) for k, v in x.items()}
        return [mark(v) for v in x] if isinstance(x, list) else x

    return mark(zig_responder(body))


@contextmanager
def server(latency: float, history: Path, responder: str = "responder", nonce: str = "") -> Iterator[str]:
    """The test server in its own process (like a remote endpoint: its CPU does not compete with the client's
    event loop for the GIL). Yields the base URL; every request lands in ``history`` as a JSON line."""
    cmd = [sys.executable, "-m", "tests.fakes.openai_server", "--latency", str(latency),
           "--responder", f"benchmarks.generate:{responder}", "--history-file", str(history)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, NONCE_ENV: nonce})
    try:
        line = proc.stdout.readline().strip() if proc.stdout else ""
        if not line.startswith("BASE_URL="):
            raise RuntimeError(f"test server did not start: {line!r}")
        yield line.split("=", 1)[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def requests_in(history: Path) -> int:
    return len(history.read_text().splitlines()) if history.exists() else 0


def recipe_loop(doc: Path, base_url: str) -> tuple[float, int, int]:
    """The original hand-run script: one request at a time, continuation for long sections, lines parsed as
    they come. Returns (wall seconds, requests, pairs)."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="bench", max_retries=0)
    sections = re.split(r"(?m)^(?=## )", doc.read_text())[1:]
    t0, requests, pairs = time.monotonic(), 0, 0
    for text in sections:
        if len(text) < 200:
            continue
        previous = ""
        for _ in range(3 if len(text) > 5000 else 1):
            user = (f"From this documentation content:\n{text}\n{previous}\nWrite 2-3 instruction/response pairs, "
                    "conceptual questions or code tasks. Answer only as JSON lines "
                    '{"instruction": ..., "response": ...}.')
            r = client.chat.completions.create(model="bench", temperature=0.7, max_tokens=8192, messages=[
                {"role": "system", "content": "You are an expert in Zig who writes training pairs."},
                {"role": "user", "content": user}])
            requests += 1
            answer = (r.choices[0].message.content or "").replace("```json", "").replace("```", "")
            lines = [ln for ln in answer.splitlines() if ln.strip().startswith("{")]
            pairs += len(lines)
            previous = f"Previous answer:\n{answer}\nWrite 2-3 more pairs on different aspects."
    return time.monotonic() - t0, requests, pairs


def _warm_imports() -> None:
    """Import what the run will import, before the clock starts (the recipe loop's imports are not timed
    either): the benchmark compares loops, not interpreter start-up."""
    import datasets  # noqa: F401
    import datasketch  # noqa: F401  (the curator's MinHash; its import pulls in scipy, ~0.8 s)
    import langchain_openai  # noqa: F401
    import langgraph.checkpoint.sqlite.aio  # noqa: F401

    import doctune.agents.curator  # noqa: F401
    import doctune.agents.dataset  # noqa: F401
    import doctune.agents.llm_generator  # noqa: F401
    import doctune.agents.validator  # noqa: F401
    import doctune.graph.graph  # noqa: F401


def bench_settings(base_url: str, concurrency: int, **extra: Any) -> Any:
    from doctune.core.settings import load_settings

    return load_settings(
        llm={"base_url": base_url, "api_key": "bench", "model": "bench", "max_retries": 2},
        generator={"kind": "llm", "concurrency": concurrency, "max_continuations": 2, "continuation_chars": 5000},
        curator={"decontaminate": False},
        dataset={"test_size": 0.1},
        **extra,
    )


def doctune_run(doc: Path, out: Path, base_url: str, concurrency: int,
                probe: bool = True) -> tuple[float, float, Any, float]:
    """The whole doctune pipeline over the same doc, preflight included (its endpoint probe, when answered, lets
    the client skip the first-request gate, as in `doctune run`). Returns (wall seconds, CPU seconds of this
    process, summary, when it started by the wall clock, which the test server's record uses)."""
    from doctune.graph.driver import run_pipeline
    from doctune.graph.lifecycle import preflight

    settings = bench_settings(base_url, concurrency)
    _warm_imports()

    async def go() -> Any:
        check = await asyncio.to_thread(preflight, [str(doc)], settings, probe)
        return await run_pipeline([str(doc)], out, settings, endpoint_verified=check.verified)

    t0, c0, w0 = time.monotonic(), time.process_time(), time.time()
    summary = asyncio.run(go())
    return time.monotonic() - t0, time.process_time() - c0, summary, w0


def phases(history: Path, skip: int, started: float, wall: float) -> str:
    """Where a no-code run's wall time went, from the server's record of the run's requests (after the first
    ``skip`` lines): before its first generation request (preflight and its probe, split, fan-out), the
    generation requests (and their average in flight), and after the last answer (curate, export)."""
    from benchmarks.generate_code import in_flight
    from doctune.agents.endpoint import PROBE_TEXT

    recs = [json.loads(line) for line in history.read_text().splitlines()[skip:]]
    gen = [(r["t_start"], r["t"]) for r in recs if r["path"].endswith("/chat/completions")
           and messages_text(r["body"], "user") != PROBE_TEXT]
    probe = [r["t"] - r["t_start"] for r in recs if messages_text(r["body"], "user") == PROBE_TEXT]
    first, last = min(s for s, _ in gen), max(e for _, e in gen)
    avg, span = in_flight(gen, (first, last))
    return (f"doctune's time: {first - started:.2f} s before its first generation request (probe "
            f"{sum(probe):.2f} s), {span:.2f} s of generation requests ({avg:.1f} in flight on average), "
            f"{started + wall - last:.2f} s after the last answer (finish, curate, export)")


def db_size_per_section(n: int, work: Path, concurrency: int) -> tuple[int, float, dict[str, float]]:
    """The run's database per section: file size, and the bytes of checkpoint data and of store data in it."""
    doc, out = work / f"doc{n}.md", work / f"out{n}"
    make_doc(doc, n, LANGREF)
    with server(0.01, work / f"hist{n}.jsonl") as base_url:
        _, _, summary, _ = doctune_run(doc, out, base_url, concurrency)
    if not (out / "state.sqlite").exists():
        raise RuntimeError("no checkpoint DB written")
    size = sum(p.stat().st_size for p in out.glob("state.sqlite*"))  # the DB and its WAL
    with sqlite3.connect(out / "state.sqlite") as db:
        parts = {
            "checkpoints": db.execute("SELECT (SELECT coalesce(sum(length(checkpoint) + length(metadata)), 0) FROM "
                                      "checkpoints) + (SELECT coalesce(sum(length(value)), 0) FROM writes)"
                                      ).fetchone()[0],
            "store": db.execute("SELECT coalesce(sum(length(value)), 0) FROM store").fetchone()[0],
        }
    per = max(1, summary.sections)
    return summary.sections, size / per, {k: v / per for k, v in parts.items()}


# ---------------------------------------------------------------- --write-costs: what the checkpoint and store cost

MODES = ("shipped", "memory store", "all in memory")


@contextmanager
def _patched(mode: str) -> Iterator[Counter[str]]:
    """Count the run's SQLite checkpoint writes and store batches (and the items in them); optionally swap in
    LangGraph's in-memory store ("memory store") or saver and store ("all in memory") -- experiments, not
    modes: they give up durability."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.store.memory import InMemoryStore

    import doctune.graph.checkpoint as cp
    from doctune.graph.store import Store

    counts: Counter[str] = Counter()
    saved: list[tuple[Any, str, Any]] = []

    def count(owner: Any, name: str, key: str) -> None:
        orig = getattr(owner, name)
        saved.append((owner, name, orig))

        async def wrapped(*args: Any, **kw: Any) -> Any:
            counts[key] += 1
            if key == "store batch":
                counts["store item"] += len(args[1])
            return await orig(*args, **kw)

        setattr(owner, name, wrapped)

    count(AsyncSqliteSaver, "aput", "checkpoint")
    count(AsyncSqliteSaver, "aput_writes", "write batch")
    count(Store, "put_pairs", "store batch")
    count(Store, "put_sections", "store batch")
    real = cp.open_persistence
    if mode != "shipped":
        @asynccontextmanager
        async def in_memory(url: Any, out_dir: Any) -> Any:
            if mode == "all in memory":
                yield InMemorySaver(), InMemoryStore()
                return
            async with real(url, out_dir) as (saver, _):
                yield saver, InMemoryStore()

        saved.append((cp, "open_persistence", real))
        cp.open_persistence = in_memory  # type: ignore[assignment]
    try:
        yield counts
    finally:
        for owner, name, orig in reversed(saved):
            setattr(owner, name, orig)


def write_costs(doc: Path, work: Path, concurrency: int, repeat: int = 2) -> None:
    """CPU seconds of the run at 0 s latency (so CPU is all there is): as shipped, with an in-memory store, and
    with saver and store in memory, best of ``repeat`` each, alternating; the SQLite store's cost is the first
    difference, checkpointing's the second. One store write is also timed alone (the run's pairs written again,
    one batch each, into a fresh database)."""
    from doctune.graph.checkpoint import open_persistence
    from doctune.graph.driver import run_pipeline
    from doctune.graph.store import Store

    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    counts: Counter[str] = Counter()
    with server(0.0, work / "hist-costs.jsonl") as base_url:
        settings = bench_settings(base_url, concurrency)
        _warm_imports()
        for k in range(repeat):
            for i, mode in enumerate(MODES):
                out = work / f"costs-{k}-{i}"
                with _patched(mode) as seen:
                    c0 = time.process_time()
                    summary = asyncio.run(run_pipeline([str(doc)], out, settings))
                    cpu[mode].append(time.process_time() - c0)
                if mode == "shipped":
                    counts, run_id = seen, summary.run_id

    async def rewrite() -> tuple[int, float, float]:
        async with open_persistence(None, work / "costs-0-0") as (_, base):
            pairs = list((await Store(base, run_id).latest_pairs()).values())
        async with open_persistence(None, work / "store-timing") as (_, base):
            store = Store(base, run_id)
            c0, t0 = time.process_time(), time.monotonic()
            for p in pairs:
                await store.put_pairs([p])
            return len(pairs), time.process_time() - c0, time.monotonic() - t0

    n, c, w = asyncio.run(rewrite())
    best = {m: min(v) for m, v in cpu.items()}
    writes = counts["checkpoint"] + counts["write batch"]
    store_s = best["shipped"] - best["memory store"]
    ckpt_s = best["memory store"] - best["all in memory"]
    print(f"CPU of the whole run at 0 s latency (best of {repeat}): {best['shipped']:.2f} s as shipped, "
          f"{best['memory store']:.2f} s with an in-memory store, {best['all in memory']:.2f} s all in memory "
          f"(all: {', '.join(f'{x:.2f}' for m in MODES for x in cpu[m])})")
    print(f"SQLite checkpointing: {ckpt_s:.2f} s for {counts['checkpoint']} checkpoints + "
          f"{counts['write batch']} write batches = {1000 * ckpt_s / max(1, writes):.2f} ms per write")
    print(f"store: {counts['store batch']} batches, {counts['store item']} items written: {store_s:.2f} s = "
          f"{1000 * store_s / max(1, counts['store item']):.2f} ms per item; alone, one pair per batch costs "
          f"{1000 * c / n:.2f} ms CPU, {1000 * w / n:.2f} ms wall")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", type=int, default=200)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--sizes", default="50,400", help="run sizes for the checkpoint-DB measurement")
    p.add_argument("--code", action="store_true", help="answers with Zig code to compile (and repair); "
                   "reports wall time against the LLM and validator floors and requests in flight")
    p.add_argument("--write-costs", action="store_true", help="also measure the CPU cost of each checkpoint "
                   "write and store write (runs at 0 s latency)")
    p.add_argument("--one-call-floor", action="store_true", help="--code: also time all blocks in one call")
    p.add_argument("--cut", type=float, default=None, help="--code: stop the run after this many seconds and "
                   "report only the requests in flight over the generation phase (no floors; a quick look)")
    p.add_argument("--no-probe", action="store_true", help="skip preflight's endpoint checks (then the LLM client "
                   "keeps its first-request gate), to compare")
    a = p.parse_args(argv)
    if a.code:
        from benchmarks.generate_code import code_run

        return code_run(a)
    with tempfile.TemporaryDirectory(prefix="doctune-bench-") as tmp:
        work = Path(tmp)
        doc = work / "bench.md"
        make_doc(doc, a.sections, LANGREF)
        history = work / "history.jsonl"
        with server(a.latency, history) as base_url:
            seq_s, seq_req, seq_pairs = recipe_loop(doc, base_url)
            par_s, par_cpu, summary, started = doctune_run(doc, work / "out", base_url, a.concurrency,
                                                           not a.no_probe)
            load = os.getloadavg()[0]
            par_req = requests_in(history) - seq_req
        print(f"sections: {a.sections}   server latency: {a.latency:.2f} s/request")
        print(f"recipe loop (sequential):   {seq_s:7.1f} s   {seq_req} requests, {seq_pairs} pairs")
        print(f"doctune (concurrency {a.concurrency:>2}):  {par_s:7.1f} s   {par_req} requests, "
              f"{summary.generated} pairs generated, {summary.accepted} kept")
        ratio = seq_s / par_s
        print(f"speed-up: {ratio:.1f}x  (goal >= 13x)   floor {a.sections * a.latency / a.concurrency:.2f} s; "
              f"doctune's own CPU {par_cpu:.1f} s; load average {load:.1f} on {os.cpu_count()} cores")
        print(phases(history, seq_req, started, par_s))
        if a.write_costs:
            write_costs(doc, work, a.concurrency)
        for n in (int(x) for x in a.sizes.split(",")):
            sections, per, parts = db_size_per_section(n, work, a.concurrency)
            print(f"checkpoint DB at N={sections:>4}: {per / 1024:6.1f} KiB per section (checkpoints "
                  f"{parts['checkpoints'] / 1024:.1f} KiB, store {parts['store'] / 1024:.1f} KiB of data)")
    return 0 if ratio >= 13 else 1


if __name__ == "__main__":
    sys.exit(main())
