"""Schema-shaped answers from a local model, and the server `doctune serve-llm` runs around them.

A tiny randomly initialised Llama with SmolLM2's real tokenizer answers (real transformers generation, so any
token can come out): whatever it writes, the answer is JSON of the requested shape, the budget is honoured and a
cut answer says finish_reason=length. The server is started as a process and spoken to over HTTP.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.train

MESSAGES = [{"role": "user", "content": "Write one instruction/response pair about Zig's `defer`."}]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from doctune.trainer.smollm2 import hf_model_dir

    tok = AutoTokenizer.from_pretrained(str(hf_model_dir()))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    out = tmp_path_factory.mktemp("models") / "tiny-zig"
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_schema_shaped_answers_always_parse(tiny_model: Path) -> None:
    from doctune.agents.judge import JudgeVerdict
    from doctune.agents.llm_generator import GeneratedPairs
    from doctune.trainer.guided import LocalChatModel

    llm = LocalChatModel(tiny_model, threads=1)
    for temp in (0.0, 1.0):
        a = llm.chat(MESSAGES, max_tokens=60, temperature=temp, schema=GeneratedPairs.model_json_schema())
        parsed = GeneratedPairs.model_validate_json(a.content)
        assert len(parsed.pairs) == 1 and parsed.pairs[0].kind in ("code", "conceptual")
        assert 0 < a.completion_tokens <= 60 and a.prompt_tokens > 10
    verdict = JudgeVerdict.model_validate_json(
        llm.chat(MESSAGES, max_tokens=40, schema=JudgeVerdict.model_json_schema()).content)
    assert 0 <= verdict.score <= 100


def test_budget_cut_is_reported_and_still_valid_json(tiny_model: Path) -> None:
    from doctune.agents.llm_generator import GeneratedPairs
    from doctune.trainer.guided import LocalChatModel

    llm = LocalChatModel(tiny_model, threads=1)
    a = llm.chat(MESSAGES, max_tokens=3, temperature=1.0, schema=GeneratedPairs.model_json_schema())
    assert a.finish_reason == "length" and a.completion_tokens <= 3
    GeneratedPairs.model_validate_json(a.content)
    free = llm.chat(MESSAGES, max_tokens=5, temperature=1.0)
    assert free.completion_tokens <= 5 and free.finish_reason in ("stop", "length")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_over_http(tiny_model: Path, tmp_path: Path) -> None:
    import httpx

    from doctune.agents.llm_generator import GeneratedPairs
    from doctune.app.cli.serve import LLMServer, client_settings

    with LLMServer(tiny_model, port=_free_port(), log_file=tmp_path / "serve.log", threads=1) as srv:
        assert srv.model == "tiny-zig"
        assert httpx.get(f"{srv.base_url}/models").json()["data"][0]["id"] == "tiny-zig"
        schema = GeneratedPairs.model_json_schema()
        body = {"model": "tiny-zig", "messages": MESSAGES, "max_tokens": 30, "temperature": 0.7,
                "response_format": {"type": "json_schema", "json_schema": {"name": "pairs", "schema": schema}}}
        r = httpx.post(f"{srv.base_url}/chat/completions", json=body, timeout=120).json()
        GeneratedPairs.model_validate_json(r["choices"][0]["message"]["content"])
        assert 0 < r["usage"]["completion_tokens"] <= 30
        wrong = httpx.post(f"{srv.base_url}/chat/completions", json={**body, "model": "gpt-4"}, timeout=30)
        assert wrong.status_code == 404
    env = client_settings(srv, tokens_per_s=4.0, answer_tokens=384)
    assert env["DOCTUNE_LLM__STRUCTURED_OUTPUT_METHOD"] == "json_schema"
    assert int(env["DOCTUNE_LLM__TIMEOUT_S"]) >= 384 / 4.0  # an answer at the measured speed fits
    assert env["DOCTUNE_GENERATOR__CONCURRENCY"] == "1"
    assert json.loads(json.dumps(env))  # plain strings, printable as exports
