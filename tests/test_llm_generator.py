"""The LLM generator agent against the fake OpenAI server over real HTTP (no LangGraph involved)."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from doctune.agents.checking import repair_request
from doctune.agents.generator import RepairRequest
from doctune.agents.llm import (
    GenerationError,
    RateLimiter,
    StructuredCaller,
    is_llm_failure,
    is_transient,
    parse_lenient,
)
from doctune.agents.llm_generator import (
    GeneratedPairs,
    LLMGenerator,
    generate_pairs,
    prompt_hash,
    repair_pair,
)
from doctune.core.errors import AccessError, EndpointError
from doctune.core.schemas import Pair, Section, SectionStats, Verdict
from doctune.core.settings import load_settings

from tests.fakes import zig_answers
from tests.fakes.openai_server import FakeOpenAI, Fault, FaultPlan, messages_text


def section(heading: str = "Integers", text: str | None = None) -> Section:
    text = text or f"## {heading}\nZig has integer types such as `u8` and `i32`.\n"
    return Section(id=f"s-{heading.lower()}", source="langref.md", path=["Values", heading], level=2, ordinal=0,
                   start_line=1, end_line=3, text=text, stats=SectionStats(chars=len(text), code_blocks=0))


def settings_for(srv: FakeOpenAI, **gen: object):
    return load_settings(llm={"base_url": srv.base_url, "api_key": "sk-test", "model": "fake-model",
                              "max_retries": 2, "timeout_s": 5},
                         generator={"max_continuations": 0, **gen})


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_generates_pairs_with_every_structured_method(method: str) -> None:
    with FakeOpenAI(zig_answers.responder, api_key="sk-test") as srv:
        s = settings_for(srv)
        s.llm.structured_output_method = method
        res = run(generate_pairs(section(), s))
    assert [p.kind for p in res.pairs] == ["code", "code", "conceptual"]
    p = res.pairs[0]
    assert p.generator == "llm:fake-model" and p.prompt_hash == prompt_hash() and p.section_id == "s-integers"
    assert p.heading_path == "Values > Integers" and p.code_blocks() and p.id.startswith("l-")
    assert res.usage.input > 0 and res.usage.output > 0 and res.usage.calls == 1
    assert sum(q.meta["usage"]["input"] for q in res.pairs) == res.usage.input
    prompt = messages_text(srv.chat_requests()[0].body)
    assert "Zig 0.14.0" in prompt and "Values > Integers" in prompt and "`u8` and `i32`" in prompt
    assert "2 of them must be code tasks" in prompt  # pairs_per_section=3, code_share=0.7


def test_rejects_unvalidatable_pairs_with_reasons() -> None:
    answer = {"pairs": [
        {"instruction": "Write code", "response": "Use a loop.", "kind": "code"},
        {"instruction": " ", "response": "x", "kind": "conceptual"},
        {"instruction": "What is u8?", "response": "An unsigned 8-bit integer.", "kind": "conceptual"},
        {"instruction": "what is u8?", "response": "Again.", "kind": "conceptual"},
    ]}
    with FakeOpenAI(lambda body: answer) as srv:
        res = run(generate_pairs(section(), settings_for(srv)))
        strict = run(generate_pairs(section(), settings_for(srv, require_code=True)))
    assert [p.instruction for p in res.pairs] == ["What is u8?"]
    assert sorted(r.reason for r in res.rejected) == [
        "code task without a ```zig block", "duplicate instruction in this section", "empty instruction or response"]
    assert "All 3 must be code tasks" in messages_text(srv.chat_requests()[-1].body)
    assert not strict.pairs and any("require_code" in r.reason for r in strict.rejected)


def test_continuation_passes_list_what_is_covered() -> None:
    long_text = "## Integers\n" + "Integers have a bit width. " * 40  # > continuation_chars=500
    with FakeOpenAI(zig_answers.responder) as srv:
        res = run(generate_pairs(section(text=long_text), settings_for(srv, continuation_chars=500, max_continuations=2)))
        bodies = [messages_text(r.body, "user") for r in srv.chat_requests()]
    assert res.passes == 3 and len(res.pairs) == 9 and len({p.id for p in res.pairs}) == 9
    assert "NEW" not in bodies[0] and "NEW instruction/response pairs" in bodies[1]
    assert all(p.instruction in bodies[2] for p in res.pairs[:6])


def test_continuation_stops_when_nothing_new() -> None:
    with FakeOpenAI(lambda body: zig_answers.generate_answer("Same", [])) as srv:
        res = run(generate_pairs(section(text="x" * 900), settings_for(srv, continuation_chars=500, max_continuations=3)))
    assert res.passes == 2 and len(res.pairs) == 3 and len(srv.chat_requests()) == 2
    assert all(r.reason == "duplicate instruction in this section" for r in res.rejected)


@pytest.mark.parametrize("fault", ["malformed", "truncated", "empty"])
@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_bad_answer_is_retried_with_feedback(fault: str, method: str) -> None:
    def responder(body: dict) -> object:
        if "could not be used" in messages_text(body, "user"):
            return zig_answers.responder(body)
        return Fault(fault)

    with FakeOpenAI(responder) as srv:
        s = settings_for(srv)
        s.llm.structured_output_method = method
        res = run(generate_pairs(section(), s))
        feedback = messages_text(srv.chat_requests()[1].body, "user")
    assert len(res.pairs) == 3 and res.usage.calls == 2
    expected = {"malformed": "JSON", "truncated": "cut off", "empty": "empty"}[fault]
    assert expected in feedback


def test_unusable_answer_is_a_rejected_pair_with_raw_text() -> None:
    """The model failed, not the endpoint: no exception, one rejected pair whose response is the raw answer."""
    with FakeOpenAI(lambda body: 'Sure! {"pairs": [oops') as srv:
        s = settings_for(srv, format_retries=1)
        s.llm.structured_output_method = "json_mode"
        res = run(generate_pairs(section(), s))
    assert res.pairs == [] and len(res.rejected) == 1 and res.usage.calls == 2
    bad = res.rejected[0]
    assert bad.reason == "unusable_answer: the answer is not valid JSON"
    assert bad.pair.response == 'Sure! {"pairs": [oops' and bad.pair.generator == "llm:fake-model"
    assert bad.pair.meta["usage"]["input"] == res.usage.input > 0  # its tokens are counted


def test_unusable_answer_error_is_not_transient() -> None:
    err = GenerationError("unusable answer from m: the answer was empty", raw="", reason="the answer was empty")
    assert not is_transient(err) and err.reason == "the answer was empty"


def test_lenient_parsing_of_almost_right_answers() -> None:
    one = '{"instruction": "a", "response": "b", "kind": "conceptual"}'
    assert len(parse_lenient(GeneratedPairs, f'```json\n{{"pairs": [{one}]}}\n```').pairs) == 1
    assert len(parse_lenient(GeneratedPairs, f"Here you go:\n{one}\n{one}\n").pairs) == 2  # the recipe's JSONL
    assert len(parse_lenient(GeneratedPairs, f"[{one}]").pairs) == 1
    with pytest.raises(ValueError, match="expected shape"):
        parse_lenient(GeneratedPairs, '{"pairs": [{"instruction": "a"}]}')


def test_transient_errors_are_retried_honouring_retry_after() -> None:
    plan = FaultPlan(rate=1.0, kinds=("429",), retry_after_s=0.3, max_per_request=1)
    with FakeOpenAI(zig_answers.responder, faults=plan) as srv:
        t0 = time.monotonic()
        res = run(generate_pairs(section(), settings_for(srv)))
        elapsed = time.monotonic() - t0
        statuses = [r.status for r in srv.chat_requests()]
    assert statuses == [429, 200] and len(res.pairs) == 3 and elapsed >= 0.3


def test_transient_errors_surface_when_retries_run_out() -> None:
    with FakeOpenAI(lambda body: Fault("500")) as srv:
        s = settings_for(srv)
        s.llm.max_retries = 1
        with pytest.raises(openai.InternalServerError) as e:
            run(generate_pairs(section(), s))
    assert is_transient(e.value) and len(srv.chat_requests()) == 2


def test_wrong_key_is_a_permanent_endpoint_error() -> None:
    with FakeOpenAI(zig_answers.responder, api_key="sk-right") as srv:
        with pytest.raises(AccessError, match="401") as e:
            run(generate_pairs(section(), settings_for(srv)))
    assert not is_transient(e.value) and not is_llm_failure(e.value) and "sk-test" not in str(e.value)
    assert isinstance(e.value, EndpointError)
    assert [r.status for r in srv.chat_requests()] == [401]  # not retried


def test_a_refusal_stops_every_later_and_concurrent_call() -> None:
    """Until the endpoint has answered once, calls go out one at a time: with 6 sections asked at once and a
    401, the endpoint sees ONE request; every call raises AccessError (a refused key is no section's problem)."""
    with FakeOpenAI(lambda body: Fault("401")) as srv:
        s = settings_for(srv)
        gen = LLMGenerator(s)

        async def all_at_once() -> list[BaseException | object]:
            try:
                return await asyncio.gather(*(gen.generate(section()) for _ in range(6)),
                                            return_exceptions=True)
            finally:
                await gen.aclose()

        results = run(all_at_once())
        assert len(srv.chat_requests()) == 1
    assert all(isinstance(r, AccessError) for r in results), results


def test_once_answered_calls_go_out_concurrently() -> None:
    with FakeOpenAI(zig_answers.responder, latency=0.3) as srv:
        s = settings_for(srv)
        gen = LLMGenerator(s)

        async def go() -> None:


            try:
                await gen.generate(section())  # the first answer opens the gate
                await asyncio.gather(*(gen.generate(section()) for _ in range(4)))
            finally:
                await gen.aclose()

        run(go())
        assert srv.max_in_flight >= 2


def test_timeouts_and_connection_errors_are_transient() -> None:
    with FakeOpenAI(lambda body: Fault("hang"), hang_s=5) as srv:
        s = settings_for(srv)
        s.llm.timeout_s, s.llm.max_retries = 0.3, 0
        with pytest.raises(openai.APITimeoutError) as e:
            run(generate_pairs(section(), s))
    assert is_transient(e.value)
    s.llm.base_url = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    with pytest.raises(openai.APIConnectionError) as e2:
        run(generate_pairs(section(), s))
    assert is_transient(e2.value) and not is_transient(ValueError("x"))


def test_env_fallback_for_endpoint_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAI(zig_answers.responder, api_key="sk-env") as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
        s = load_settings(generator={"max_continuations": 0})
        res = run(LLMGenerator(s).generate(section())).pairs
    assert len(res) == 3 and srv.chat_requests()[0].headers["authorization"] == "Bearer sk-env"


def test_repair_sends_instruction_code_and_compiler_output() -> None:
    with FakeOpenAI(zig_answers.responder) as srv:
        s = settings_for(srv)
        gen = LLMGenerator(s)
        broken = run(gen.generate(section())).pairs[1]
        broken.verdict = Verdict(verdict="compile_error", stage="compile",
                                 stderr="main.zig:4:33: error: use of undeclared identifier 'missing_name'")
        result = run(gen.repair(broken, repair_request(broken)))
        sent = messages_text(srv.chat_requests()[-1].body, "user")
    fixed = result.pair
    assert isinstance(fixed, Pair) and fixed.id == broken.id and fixed.instruction == broken.instruction
    assert zig_answers.BROKEN_MARK not in fixed.response and fixed.code_blocks() and result.error is None
    assert broken.instruction in sent and "missing_name" in sent and "undeclared identifier" in sent
    assert fixed.meta["feedback"] == broken.verdict.stderr and fixed.meta["usage"]["output"] > 0
    assert result.usage.output > 0 and gen.usage.calls == 2


def test_repair_without_code_gives_none_with_reason() -> None:
    with FakeOpenAI(lambda body: {"response": "I cannot fix this."}) as srv:
        s = settings_for(srv)
        gen = LLMGenerator(s)
        p = Pair(id="p1", section_id="s", heading_path="h", source="d", instruction="Print 1",
                 response="```zig\nbad\n```", generator="llm:fake-model")
        result = run(gen.repair(p, RepairRequest("compile_error", "error: x")))
        assert result.pair is None and "no ```zig block" in result.error and result.usage.calls == 1
        with pytest.raises(GenerationError):
            run(repair_pair(p, RepairRequest("compile_error", "error: x"), s))


def test_rate_limiter_spaces_requests() -> None:
    async def burst() -> float:
        lim = RateLimiter(20)
        t0 = time.monotonic()
        await asyncio.gather(*(lim.acquire() for _ in range(10)))
        return time.monotonic() - t0

    assert run(burst()) >= 0.44


def test_shared_caller_limits_concurrent_sections() -> None:
    async def many(gen: LLMGenerator) -> list[list[Pair]]:
        return [r.pairs for r in await asyncio.gather(*(gen.generate(section(f"H{i}")) for i in range(4)))]

    with FakeOpenAI(zig_answers.responder, latency=0.05) as srv:
        s = settings_for(srv)
        s.llm.requests_per_second = 10
        caller = StructuredCaller(s.llm, limiter=RateLimiter(10))
        t0 = time.monotonic()
        out = run(many(LLMGenerator(s, caller=caller)))
        elapsed = time.monotonic() - t0
    assert [len(x) for x in out] == [3, 3, 3, 3] and elapsed >= 0.3
    assert {zig_answers.section_of(r.body) for r in srv.chat_requests()} == {"Values > H0", "Values > H1",
                                                                             "Values > H2", "Values > H3"}


def test_usage_cost_from_settings_prices() -> None:
    from doctune.agents.llm import Usage

    s = load_settings(llm={"price_input_per_mtok": 0.5, "price_output_per_mtok": 2.0})
    u = Usage(input=2_000_000, output=500_000, calls=3) + Usage(input=0, output=500_000, calls=1)
    assert u.calls == 4 and u.cost_usd(s.llm) == pytest.approx(1.0 + 2.0)
    assert u.as_meta() == {"input": 2_000_000, "output": 1_000_000, "calls": 4}


def test_triplets_keep_tests_and_stdout_apart_from_the_response() -> None:
    """The hidden tests go to Pair.tests and a program's stdout to Pair.expect, never into the response; "tests"
    without a `test` block ("none") are no hidden tests; stdout is kept only for a program."""
    def responder(body: dict) -> object:
        if "instruction/response pairs" not in messages_text(body, "user"):
            return "ok"
        answer = zig_answers.triplet_answer("Values > Integers")
        answer["pairs"] += [
            {"instruction": "Write double.", "response": zig_answers.zig("pub fn double(x: i32) i32 { return 2 * x; }\n"),
             "kind": "code", "tests": "none", "expected_stdout": "4\n"}]
        return answer

    with FakeOpenAI(responder) as srv:
        res = run(generate_pairs(section(), settings_for(srv, pairs_per_section=5)))
        sent = messages_text(srv.chat_requests()[0].body, "user")
    right, wrong, vacuous, program, double = res.pairs
    assert 'test "triple of' in right.tests and "test " not in right.response and right.expect is None
    assert vacuous.tests == zig_answers.VACUOUS_TESTS.strip() and right.id != wrong.id
    assert program.tests is None and program.expect.stdout == f"{zig_answers.value_of('Values > Integers')}\n"
    assert double.tests is None and double.expect is None and double.meta["tests_ignored"] == "none"
    assert '"tests"' in sent and "expected_stdout" in sent and "std.io.getStdOut()" in sent
