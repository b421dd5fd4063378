"""LLM faults: `doctune run` (the real CLI in a child process) over 40 sections of the Zig 0.14 langref against a
local OpenAI-compatible server that injects faults into 30% of the requests (429 with Retry-After, 500, hangs
past the client timeout, malformed JSON, truncated answers, empty answers). The run must complete and every
section must be accounted for: pairs accepted, pairs rejected with a reason, or the section failed with an error
(or skipped as too short to generate from) — checked against `doctune status --json` and the output files.
Then `doctune retry` against a well-behaved server re-runs exactly the failed sections.

The canned model answers each section with a correct program, a program with a compile error (fixed on repair)
and a conceptual question; the programs come from a small pool so the real compiler runs only a few times.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from doctune.agents.endpoint import PROBE_TEXT
from doctune.core.schemas import Section

from tests.fakes import zig_answers
from tests.fakes.openai_server import FakeOpenAI, FaultPlan, messages_text
from tests.reliability.conftest import bump
from tests.reliability.harness import llm_env, no_traceback, run_cli, stored_sections

pytestmark = pytest.mark.zig

N_SECTIONS = 40
FAULT_KINDS = ("429", "500", "hang", "malformed", "truncated", "empty")


def pooled_responder(body: dict[str, Any]) -> dict[str, Any] | str:
    """zig_answers' model, with the printed numbers drawn from a pool of 3 (few distinct programs to compile)."""
    user = messages_text(body, "user")
    if "failed when its code was checked" in user:
        return zig_answers.repair_answer(body)
    if "instruction/response pairs" not in user:
        return zig_answers.responder(body)
    heading = zig_answers.section_of(body)
    v = zig_answers.value_of(heading) % 3 * 2  # even: the repaired program prints v + 1, also from a pool of 3
    pairs = [
        {"instruction": f"Write a Zig program about {heading} that prints {v}.",
         "response": zig_answers.zig(zig_answers.GOOD.replace("VALUE", str(v))), "kind": "code"},
        {"instruction": f"Write a Zig program about {heading} that prints {v + 1}.",
         "response": zig_answers.zig(zig_answers.BROKEN), "kind": "code"},
        {"instruction": f"What does the section {heading} explain?",
         "response": f"It explains {heading} in Zig 0.14.0.", "kind": "conceptual"},
    ]
    return {"pairs": pairs}


def warm_verdicts(cache: Path) -> None:
    """Compile every program of the pool once, in-process, into the run's verdict cache: otherwise 8 concurrent
    sections compile the same few programs side by side on a 2-core box (the validator does not share
    in-flight compiles)."""
    import asyncio

    from doctune.agents.validator import BlockInput, Validator
    from doctune.core.schemas import extract_zig_blocks
    from doctune.core.settings import load_settings

    codes = [zig_answers.GOOD.replace("VALUE", str(v)) for v in range(6)] + [zig_answers.BROKEN]
    items = [BlockInput(id=f"warm#{i}", code=extract_zig_blocks(zig_answers.zig(c))[0], expect=None, mode="auto")
             for i, c in enumerate(codes)]

    async def go() -> None:
        v = Validator(load_settings(validator={"cache_path": str(cache)}).validator)
        try:
            await v.validate_many(items)
        finally:
            await v.aclose()

    asyncio.run(go())


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _sections(out: Path) -> dict[str, Section]:
    return stored_sections(out)


def test_run_survives_thirty_percent_llm_faults(langref: Path, tmp_path: Path, tally: dict[str, Any]) -> None:
    out = tmp_path / "out"
    plan = FaultPlan(rate=0.3, kinds=FAULT_KINDS, seed=11, retry_after_s=0.2)
    warm_verdicts(tmp_path / "verdicts.sqlite")  # the cache llm_env/clean_env points the run at
    with FakeOpenAI(pooled_responder, faults=plan, hang_s=4.0) as srv:
        env = llm_env(tmp_path, srv.base_url, DOCTUNE_LLM__TIMEOUT_S="1.5", DOCTUNE_CURATOR__DEDUP="false",
                      DOCTUNE_GENERATOR__CONCURRENCY="8")
        r = run_cli(["run", str(langref), "--out", str(out), "--max-sections", str(N_SECTIONS)], env, timeout=400)
        # Preflight's probe is no section's request: a fault there only keeps the run's first-request gate.
        faults = [rec for rec in srv.chat_requests() if rec.fault and messages_text(rec.body) != PROBE_TEXT]
    assert r.returncode == 0 and no_traceback(r.stderr), r.stderr[-3000:]
    print(r.stderr[-2500:])  # the run's summary, for -s
    s = run_cli(["status", str(out), "--json"], env)
    assert s.returncode == 0, s.stderr
    st = json.loads(s.stdout)

    pairs, rejected = _rows(out / "pairs.jsonl"), _rows(out / "rejected.jsonl")
    run_info = json.loads((out / "run.json").read_text())
    sections = _sections(out)
    min_chars = run_info["settings"]["generator"]["min_section_chars"]
    failed = {row["section_id"]: row["error"] for row in rejected if row["reason"] == "section_failed"}
    accepted = Counter(p["section_id"] for p in pairs)
    rejected_with_reason = Counter(row["section_id"] for row in rejected
                                   if row["reason"] != "section_failed" and row["reason"])
    assert all(e and e.split(":", 1)[0] in ("generate failed", "repair failed") for e in failed.values()), failed

    assert st["state"] == ("completed_with_failures" if failed else "completed"), st
    assert st["sections"]["total"] == N_SECTIONS, st
    assert st["sections"]["pending"] == 0 and st["sections"]["done"] + st["sections"]["failed"] == N_SECTIONS, st
    assert {f["section_id"] for f in st["failed"]} == set(failed), (st["failed"], failed)
    assert st["pairs"]["accepted"] == len(pairs) > 0

    chosen = _run_section_ids(out)
    assert len(chosen) == N_SECTIONS
    accounted = []
    for sid in chosen:
        short = len(sections[sid].text) < min_chars
        if accepted[sid] or rejected_with_reason[sid] or sid in failed or short:
            accounted.append(sid)
    assert len(accounted) == N_SECTIONS, set(chosen) - set(accounted)

    by_kind = Counter(f.fault for f in faults)
    assert sum(by_kind.values()) >= 10 and set(by_kind) >= {"429", "500", "malformed"}, by_kind
    # As the prompts name a section: its heading path, or its title for the preamble (no heading above it).
    heading_ids = {sections[sid].heading_path or sections[sid].title: sid for sid in accounted}
    handled = sum(1 for f in faults if _heading(f.body) in heading_ids)  # its section ended accounted for
    assert handled == len(faults), [(f.fault, _heading(f.body)) for f in faults if _heading(f.body) not in heading_ids]
    bump(tally, "llm_faults", injected=len(faults), handled=handled, sections=N_SECTIONS, accounted=len(accounted),
         **{f"kind:{k}": n for k, n in by_kind.items()})

    if failed:  # the failed sections are retryable: once the endpoint behaves, `doctune retry` completes them
        with FakeOpenAI(pooled_responder) as srv:
            # The run's settings of record name the old endpoint: a new one is an explicit, recorded change.
            r = run_cli(["retry", str(out), "--set", f"llm.base_url={srv.base_url}"], env, timeout=300)
            retried = {_heading(q.body) for q in srv.chat_requests()}
        assert r.returncode == 0 and no_traceback(r.stderr), r.stderr[-3000:]
        assert retried == {sections[sid].heading_path for sid in failed}  # and nothing else was generated again
        st = json.loads(run_cli(["status", str(out), "--json"], env).stdout)
        assert (st["state"], st["sections"]["done"], st["sections"]["failed"]) == ("completed", N_SECTIONS, 0), st


def _heading(body: dict[str, Any]) -> str:
    """The section a request was about: named in generation prompts, inside the instruction in repair prompts."""
    heading = zig_answers.section_of(body)
    if heading == "?" and (m := re.search(r"program about (.+?) that prints", messages_text(body, "user"))):
        heading = m.group(1)
    return heading


def _run_section_ids(out: Path) -> list[str]:
    """The sections this run processed, as the checkpoint has them."""
    import asyncio

    from doctune.graph.lifecycle import astatus

    return asyncio.run(astatus(out)).section_ids
