"""`python benchmarks/generate.py --code`: generation, Zig checks and repairs as two pipelined stages.

The server answers with Zig programs (tests/fakes/zig_answers: per section a correct program, one with a compile
error that the repair prompt fixes, and a conceptual pair), so the run generates, compiles, repairs and compiles
again. Reported: the run's wall time against the two floors -- N*L/C for the LLM, and the validator's own time for
the same blocks, measured in the same invocation by validating them directly with a fresh validator -- and the
average number of LLM requests in flight, from the server's own record of its requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.generate import LANGREF, _warm_imports, bench_settings, make_doc, server

from tests.fakes.openai_server import messages_text


def llm_intervals(history: Path, latency: float) -> dict[str, list[tuple[float, float]]]:
    """Each chat request as (start, end) by kind ("probe" | "generate" | "repair"), as the server saw it: from when
    it had read the request to when its answer was ready (start = end - L for a server that does not record
    starts). The probe is preflight's one-token request, made before the graph starts."""
    from doctune.agents.endpoint import PROBE_TEXT

    out: dict[str, list[tuple[float, float]]] = {"probe": [], "generate": [], "repair": []}
    for line in history.read_text().splitlines():
        rec = json.loads(line)
        if not rec["path"].endswith("/chat/completions"):
            continue
        user = messages_text(rec["body"], "user")
        kind = "probe" if user == PROBE_TEXT else "repair" if "failed when its code was checked" in user else "generate"
        out[kind].append((rec.get("t_start") or rec["t"] - latency, rec["t"]))
    return out


def in_flight(intervals: list[tuple[float, float]], window: tuple[float, float] | None = None) -> tuple[float, float]:
    """(average requests in flight, seconds): over ``window``, or else over the time any request was open."""
    if window is not None:
        lo, hi = window
        busy = sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in intervals)
        return busy / max(hi - lo, 1e-9), hi - lo
    union, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        union += max(0.0, e - max(s, end))
        end = max(end, e)
    return sum(e - s for s, e in intervals) / max(union, 1e-9), union


def _recording_validator(settings: Any) -> Any:
    """The run's validator, unchanged, keeping the blocks of every ``validate_many`` call (= one validate node)."""
    from doctune.agents.validator import Validator

    class Recording(Validator):
        def __init__(self, s: Any) -> None:
            super().__init__(s)
            self.groups: list[list[Any]] = []

        async def validate_many(self, items: Any, *, on_done: Any = None) -> Any:
            self.groups.append(list(items))
            return await super().validate_many(items, on_done=on_done)

    return Recording(settings)


def validator_floor(groups: list[list[Any]], settings: Any, old: str, new: str, one_call: bool) -> tuple[float, int]:
    """Validate the run's blocks directly with a fresh validator (its own verdict cache; ``old`` -> ``new`` in
    the marker comment, so the Zig cache knows none of them): every validate node's call at once, or all blocks
    in one call. Returns (seconds, compiles)."""
    from doctune.agents.validator import Validator

    calls = [[b.model_copy(update={"code": b.code.replace(old, new)}) for b in g] for g in groups]
    if one_call:
        calls = [[b for g in calls for b in g]]
    v = Validator(settings)

    async def go() -> float:
        t0 = time.monotonic()
        await asyncio.gather(*(v.validate_many(c) for c in calls))
        t = time.monotonic() - t0
        await v.aclose()
        return t

    return asyncio.run(go()), v.executions


def code_run(a: argparse.Namespace) -> int:
    """The pipelined run: generation, checks and repairs, against both floors (with ``--cut S``: the run stopped
    after S seconds, no floors, only the requests in flight over the generation phase)."""
    import tempfile
    import uuid

    nonce = uuid.uuid4().hex[:12]
    with tempfile.TemporaryDirectory(prefix="doctune-bench-") as tmp:
        work = Path(tmp)
        doc, history = work / "bench.md", work / "history.jsonl"
        make_doc(doc, a.sections, LANGREF)
        with server(a.latency, history, "code_responder", nonce) as base_url:
            settings = bench_settings(base_url, a.concurrency, validator={"cache_path": str(work / "run.sqlite")})
            summary, rec, run_s, run_cpu = _timed_run(a, doc, work, settings, nonce)
            load = os.getloadavg()[0]
        reqs = llm_intervals(history, a.latency)
        every, gen = reqs["generate"] + reqs["repair"], reqs["generate"]
        avg_gen, gen_s = in_flight(every, (min(s for s, _ in gen), max(e for _, e in gen)))
        print(f"sections: {a.sections}   latency: {a.latency:.2f} s   generator.concurrency: {a.concurrency}   "
              f"validator.concurrency: {settings.validator.concurrency}   sections in flight: "
              f"{settings.generator.sections_bound()}   probe: {'no' if a.no_probe else 'yes'}")
        if reqs["probe"]:
            (ps, pe), start = reqs["probe"][0], min(s for s, _ in gen)
            print(f"preflight probe: {pe - ps:.2f} s, answered {start - pe:.2f} s before the first generation request")
        if summary is None:
            print(f"cut after {a.cut:.0f} s: requests in flight {avg_gen:5.1f} over the generation phase ({gen_s:.2f} s, "
                  f"{len(gen)} generation requests)   goal >= 12; load average {load:.1f} on {os.cpu_count()} cores")
            return 0 if avg_gen >= 12 else 1
        vs = settings.validator.model_copy(update={"cache_path": work / "floor.sqlite"})
        floor_s, floor_n = validator_floor(rec.groups, vs, nonce, nonce + "-floor", False)
        if a.one_call_floor:
            vs1 = settings.validator.model_copy(update={"cache_path": work / "floor1.sqlite"})
            one_s, one_n = validator_floor(rec.groups, vs1, nonce, nonce + "-one", True)
            print(f"validator, all blocks one call:  {one_s:7.1f} s   {one_n} compiles (batched across sections)")
    llm_floor = len(every) * a.latency / a.concurrency
    avg_all, busy = in_flight(every)
    slower = max(llm_floor, floor_s)
    print(f"run:   {run_s:7.1f} s   {len(reqs['probe'])} probe + {len(gen)} generation + "
          f"{len(reqs['repair'])} repair requests, "
          f"{summary.generated} pairs, {summary.accepted} kept, {rec.executions} compiles, "
          f"{sum(len(g) for g in rec.groups)} blocks in {len(rec.groups)} validate calls")
    print(f"LLM floor (N*L/C):               {llm_floor:7.1f} s")
    print(f"validator floor (same calls):    {floor_s:7.1f} s   {floor_n} compiles")
    print(f"requests in flight: {avg_gen:5.1f} over the generation phase ({gen_s:.1f} s), "
          f"{avg_all:5.1f} over all LLM activity ({busy:.1f} s)   goal >= 12")
    print(f"doctune's own CPU during the run: {run_cpu:.1f} s; load average {load:.1f} on {os.cpu_count()} cores")
    print(f"wall / slower floor: {run_s / slower:.2f}   goal <= 1.2")
    return 0 if run_s <= 1.2 * slower and avg_gen >= 12 else 1


def _timed_run(a: argparse.Namespace, doc: Path, work: Path, settings: Any, nonce: str) -> tuple[Any, Any, float, float]:
    """(summary or None when cut, the recording validator, wall seconds, CPU seconds) of one run, as `doctune run`
    makes it: preflight (GET /models, the one-token probe), then the graph; an answered probe lets the LLM client
    send its first requests together (no first-request gate)."""
    from doctune.agents.validator import BlockInput
    from doctune.graph.context import Context
    from doctune.graph.driver import run_pipeline
    from doctune.graph.lifecycle import preflight

    _warm_imports()
    warm = [[BlockInput(id="warm", code=f"// {nonce} warm-up\npub fn main() void {{}}\n")]]
    validator_floor(warm, settings.validator.model_copy(update={"cache": False}), "", "", False)
    rec = _recording_validator(settings.validator)

    async def go() -> Any:
        check = await asyncio.to_thread(preflight, [str(doc)], settings, not a.no_probe)
        ctx = Context(settings=settings, out_dir=work / "out", validator=rec, endpoint_verified=check.verified)
        try:
            run = run_pipeline([str(doc)], work / "out", settings, context=ctx)
            return await (asyncio.wait_for(run, a.cut) if a.cut else run)
        except TimeoutError:
            return None
        finally:
            await ctx.aclose()
            await rec.aclose()

    t0, c0 = time.monotonic(), time.process_time()
    summary = asyncio.run(go())
    return summary, rec, time.monotonic() - t0, time.process_time() - c0
