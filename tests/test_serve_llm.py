"""`doctune serve-llm`: doctune's server on SmolLM2-135M-Instruct, driven by the LLM generator.

Slow (model conversion on first use, CPU generation). The 135M model's answers are poor; what is checked is that
its answers parse (the server shapes them with the request's JSON schema) and every section ends cleanly: pairs,
or a GenerationError that keeps the raw answer (an answer cut at max_tokens) -- never a crash or a hang.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from doctune.agents.llm import GenerationError
from doctune.agents.llm_generator import LLMGenerator
from doctune.core.schemas import Section, SectionStats
from doctune.core.settings import load_settings

# 3 short answers: seconds on a quiet CPU, minutes on a busy one (135M model, ~1-30 tokens/s).
pytestmark = [pytest.mark.slow, pytest.mark.train, pytest.mark.timeout(1200)]

TEXTS = {
    "Integers": "Zig supports arbitrary bit-width integers: `u8`, `i32`, `u7`. Integer literals have no size limit "
                "and overflow is detected at compile time when possible.",
    "Optionals": "An optional type `?T` holds either a value of type T or `null`. Use `orelse` to give a default "
                 "and `if (x) |v|` to unwrap it.",
    "Defer": "`defer` runs an expression when the current scope exits, in reverse order of the defers. "
             "`errdefer` runs only when the scope returns an error.",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_three_sections_against_doctune_serve_llm(tmp_path) -> None:
    for mod in ("fastapi", "uvicorn", "transformers", "torch"):
        pytest.importorskip(mod)
    pytest.importorskip("doctune.trainer.smollm2")
    from doctune.app.cli.serve import LLMServer

    sections = [Section(id=f"s{i}", source="t.md", path=[h], level=2, ordinal=i, start_line=1, end_line=2,
                        text=f"## {h}\n{t}\n", stats=SectionStats(chars=len(t), code_blocks=0))
                for i, (h, t) in enumerate(TEXTS.items())]
    with LLMServer(port=_free_port(), log_file=tmp_path / "serve.log") as srv:
        s = load_settings(llm={"base_url": srv.base_url, "model": srv.model, "structured_output_method": "json_schema",
                               "max_tokens": 256, "timeout_s": 900, "max_retries": 0},
                          generator={"pairs_per_section": 1, "format_retries": 0})
        gen = LLMGenerator(s)

        async def one(sec: Section) -> str:
            try:
                res = await gen.generate(sec)
            except GenerationError as e:
                assert e.raw is not None  # the model's own words are kept for the failure report
                return "failed"
            assert all(p.generator == f"llm:{srv.model}" and p.instruction for p in res.pairs)
            return "ok"

        async def all_sections() -> list[str]:
            out = [await one(sec) for sec in sections]  # one at a time: the CPU server is the bottleneck
            await gen.aclose()
            return out

        outcomes = asyncio.run(all_sections())
    assert len(outcomes) == 3 and gen.usage.calls >= 3 and gen.usage.output > 0
    assert "ok" in outcomes, outcomes  # schema-shaped answers parse (before: json_mode, none ever did)
