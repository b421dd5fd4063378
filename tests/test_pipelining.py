"""Generation and validation as two stages with their own limits: the LLM request limit (`RequestLimit`, held by
the client, not by the graph), single-flight sharing of identical checks (`SingleFlight`, the validator's
in-flight de-duplication) and, through the whole graph, sections that wait for their checks without holding an
LLM slot."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from doctune.agents.limits import RequestLimit, SingleFlight
from doctune.agents.llm import StructuredCaller
from doctune.agents.llm_generator import GeneratedPairs
from doctune.agents.validator import BlockInput, Validator
from doctune.core.settings import LLMSettings, ValidatorSettings, load_settings
from doctune.executors.local import LocalExecutor
from doctune.graph.driver import run_pipeline

from tests.fakes import zig_answers
from tests.fakes.openai_server import FakeOpenAI, Fault, messages_text
from tests.reliability.harness import zig_doc

ZIG_CACHE = Path(os.environ.get("DOCTUNE_TEST_ZIG_CACHE", Path(tempfile.gettempdir()) / "doctune-test-zig-cache"))
PROGRAM = 'const std = @import("std");\n\npub fn main() void {\n    std.debug.print("{d}\\n", .{41});\n}\n'


# ---------------------------------------------------------------- RequestLimit


def test_request_limit_bounds_requests_in_flight() -> None:
    limit = RequestLimit(3)
    open_now: list[int] = []

    async def request() -> None:
        async with limit:
            open_now.append(limit.in_flight)
            await asyncio.sleep(0.01)

    async def main() -> None:
        await asyncio.gather(*(request() for _ in range(10)))

    asyncio.run(main())
    assert limit.peak == 3 and max(open_now) == 3 and len(open_now) == 10 and limit.in_flight == 0
    asyncio.run(main())  # a new event loop gets a new semaphore: the limit still holds
    assert limit.peak == 3 and limit.in_flight == 0
    with pytest.raises(ValueError, match="at least 1"):
        RequestLimit(0)


def _eight_concurrent_calls(limit: int, endpoint_verified: bool = False) -> tuple[FakeOpenAI, StructuredCaller]:
    """Eight concurrent calls through one fresh caller with a request limit, against a server with 0.2 s latency."""
    answer = {"pairs": [{"instruction": "q", "response": "a", "kind": "conceptual"}]}
    with FakeOpenAI(lambda body: answer, latency=0.2) as srv:
        llm = LLMSettings(base_url=srv.base_url, api_key="k", model="m", max_retries=0)
        caller = StructuredCaller(llm, in_flight=RequestLimit(limit), endpoint_verified=endpoint_verified)

        async def main() -> list[object]:
            try:
                return await asyncio.gather(*(caller.call(GeneratedPairs, [HumanMessage(content=f"q{i}")],
                                                          shape="{}") for i in range(8)))
            finally:
                await caller.aclose()

        assert len(asyncio.run(main())) == 8
    assert len(srv.chat_requests()) == 8
    return srv, caller


def test_structured_caller_keeps_to_its_request_limit() -> None:
    """Eight concurrent calls through one caller with a limit of 3: the server never sees more than 3 at once."""
    srv, caller = _eight_concurrent_calls(3)
    assert srv.max_in_flight == 3 and caller.in_flight is not None and caller.in_flight.peak == 3


def test_requests_queued_behind_the_first_one_go_out_together_once_it_answered() -> None:
    """Until the endpoint has answered once, requests wait at a gate (a refused key costs one request); once it
    answered, the requests that queued there go out at once, not one gate holder at a time."""
    srv, _ = _eight_concurrent_calls(8)
    assert srv.max_in_flight >= 5, srv.max_in_flight  # the first alone, then the seven that waited (1 if serialised)
    first, *rest = sorted(srv.chat_requests(), key=lambda r: r.t)
    assert all(r.t_start is not None and first.t <= r.t_start for r in rest)  # the gate: the first went out alone


def test_a_verified_endpoint_needs_no_gate() -> None:
    """A caller told that preflight's probe was answered (``endpoint_verified``) sends its first eight requests
    together: all eight are open before the first is answered."""
    srv, _ = _eight_concurrent_calls(8, endpoint_verified=True)
    first_answer = min(r.t for r in srv.chat_requests())
    assert srv.max_in_flight == 8
    assert all(r.t_start is not None and r.t_start < first_answer for r in srv.chat_requests())


# ---------------------------------------------------------------- SingleFlight


def test_single_flight_shares_one_computation_per_key() -> None:
    flights: SingleFlight[dict[str, int]] = SingleFlight(copy=dict)
    computed: list[str] = []
    seen: list[tuple[str, int]] = []

    def compute_for(keys: list[str], name: str):  # noqa: ANN202
        async def compute(idx: list[int], done) -> list[dict[str, int]]:  # noqa: ANN001
            out = []
            for i in idx:
                computed.append(keys[i])
                await asyncio.sleep(0.05)
                out.append({keys[i]: len(computed)})
                done(len(out) - 1, out[-1])  # released as soon as it is known
            return out

        return compute

    async def caller(keys: list[str], name: str) -> list[dict[str, int]]:
        return await flights.run(keys, compute_for(keys, name), lambda i, v: seen.append((name, i)))

    async def main() -> tuple[list[dict[str, int]], list[dict[str, int]]]:
        return await asyncio.gather(caller(["a", "b", "a"], "first"), caller(["b", "c"], "second"))

    first, second = asyncio.run(main())
    assert sorted(computed) == ["a", "b", "c"]  # "a" twice in one call and "b" in two calls: computed once each
    assert first[0] == first[2] and first[1] == second[0]
    assert first[0] is not first[2] and first[1] is not second[0]  # waiters get their own copy
    assert sorted(seen) == [("first", 0), ("first", 1), ("first", 2), ("second", 0), ("second", 1)]
    assert flights.running == 0


@pytest.mark.parametrize("how", ["raises", "cancelled"])
def test_single_flight_waiter_computes_alone_when_the_owner_fails(how: str) -> None:
    flights: SingleFlight[str] = SingleFlight()
    calls: list[str] = []

    async def failing(idx: list[int], done) -> list[str]:  # noqa: ANN001
        calls.append("owner")
        await asyncio.sleep(0.05)
        raise RuntimeError("owner broke")

    async def working(idx: list[int], done) -> list[str]:  # noqa: ANN001
        calls.append("waiter")
        return ["value"]

    async def main() -> str:
        owner = asyncio.create_task(flights.run(["k"], failing))
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(flights.run(["k"], working))
        await asyncio.sleep(0.01)
        if how == "cancelled":
            owner.cancel()
        with pytest.raises(asyncio.CancelledError if how == "cancelled" else RuntimeError):
            await owner
        return (await waiter)[0]

    assert asyncio.run(main()) == "value"
    assert calls == ["owner", "waiter"] and flights.running == 0


# ---------------------------------------------------------------- the validator's in-flight de-duplication


@pytest.mark.zig
def test_identical_blocks_checked_at_once_share_one_compile(tmp_path: Path) -> None:
    """Three callers (two `validate_many` calls and one `validate`) ask about the same program at the same moment,
    with the verdict cache off: one compile, the same verdict for all."""
    s = ValidatorSettings(cache=False, concurrency=2)
    v = Validator(s, LocalExecutor(s, zig_cache=ZIG_CACHE))
    code = PROGRAM.replace("41", str(os.getpid() % 997))  # unknown to Zig's cache from an earlier run

    async def main():  # noqa: ANN202
        try:
            return await asyncio.gather(
                v.validate_many([BlockInput(id="a", code=code), BlockInput(id="b", code=code)]),
                v.validate_many([BlockInput(id="c", code=code)]),
                v.validate(code),
            )
        finally:
            await v.aclose()

    (a, b), (c,), d = asyncio.run(main())
    assert v.executions == 1
    assert a.verdict == "ok" and a.evidence == "ran"
    assert a.model_dump() == b.model_dump() == c.model_dump() == d.model_dump()


# ---------------------------------------------------------------- through the graph


@pytest.mark.zig
@pytest.mark.parametrize("sections_in_flight", [None, 1])
def test_sections_wait_for_checks_without_holding_an_llm_slot(tmp_path: Path, sections_in_flight: int | None) -> None:
    """Three sections, two LLM slots, one code check at a time. Decoupled, every section's generation request is
    answered before the first repair request (repairs need a finished check); with one section in flight the
    first repair comes before the second section is even generated."""
    doc = tmp_path / "doc.md"
    doc.write_text(zig_doc(3), encoding="utf-8")
    with FakeOpenAI(zig_answers.responder, latency=0.2) as srv:
        settings = load_settings(
            llm={"base_url": srv.base_url, "api_key": "k", "model": "m", "max_retries": 0, "timeout_s": 10},
            generator={"kind": "llm", "max_continuations": 0, "concurrency": 2,
                       "sections_in_flight": sections_in_flight},
            validator={"cache_path": str(tmp_path / "verdicts.sqlite"), "concurrency": 1},
        )
        summary = asyncio.run(run_pipeline([str(doc)], tmp_path / "out", settings))
        kinds = ["repair" if "failed when its code was checked" in messages_text(r.body, "user") else "generate"
                 for r in sorted(srv.chat_requests(), key=lambda r: r.t)]
    assert summary.failed_sections == 0 and summary.accepted == 9, summary
    assert kinds.count("generate") == 3 and kinds.count("repair") == 3
    assert srv.max_in_flight <= 2
    first_repair = kinds.index("repair")
    assert first_repair == (3 if sections_in_flight is None else 1), kinds


@pytest.mark.parametrize("probe", ["answered", "fails"])
def test_a_run_whose_probe_was_answered_sends_its_first_requests_together(tmp_path: Path, probe: str) -> None:
    """`arun` end to end: preflight's probe answered -> the four sections' generation requests are all open before
    the first is answered; the probe failing (a 500: no verdict on the key) -> the first goes out alone."""
    from doctune.agents.endpoint import PROBE_TEXT
    from doctune.graph.lifecycle import arun

    answer = {"pairs": [{"instruction": "What is it?", "response": "A thing.", "kind": "conceptual"}]}

    def responder(body: dict) -> object:
        return Fault("500") if probe == "fails" and messages_text(body) == PROBE_TEXT else answer

    doc = tmp_path / "doc.md"
    doc.write_text(zig_doc(4), encoding="utf-8")
    with FakeOpenAI(responder, latency=0.3) as srv:
        settings = load_settings(
            llm={"base_url": srv.base_url, "api_key": "k", "model": "m", "max_retries": 0, "timeout_s": 10},
            generator={"kind": "llm", "max_continuations": 0, "concurrency": 4},
            validator={"cache_path": str(tmp_path / "verdicts.sqlite")},
        )
        summary = asyncio.run(arun([str(doc)], tmp_path / "out", settings))
        gen = [r for r in srv.chat_requests() if messages_text(r.body) != PROBE_TEXT]
    assert summary.failed_sections == 0 and len(gen) == 4 and all(r.status == 200 for r in gen), summary
    first_answer = min(r.t for r in gen)
    together = sum(1 for r in gen if r.t_start is not None and r.t_start < first_answer)
    assert together == (4 if probe == "answered" else 1), together
