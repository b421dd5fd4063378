"""The section nodes without a compiler (real LangGraph, the fake OpenAI server over HTTP): pairs without code are
`conceptual`, `curator.min_evidence` drops what is below it with a counted reason, and the repair loop runs on
verdicts the validator gives before compiling (a block importing a file that is not there is `unsupported`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from doctune.core.settings import load_settings
from doctune.graph.lifecycle import arun

from tests.fakes.openai_server import FakeOpenAI, messages_text
from tests.reliability.harness import stored_pairs, zig_doc

IMPORTS_MISSING = '```zig\nconst lib = @import("lib.zig");\n\npub fn main() void {\n    lib.run();\n}\n```\n'


def _responder(repair: dict[str, Any]) -> Any:
    def answer(body: dict[str, Any]) -> dict[str, Any] | str:
        user = messages_text(body, "user")
        if "failed when its code was checked" in user:
            return repair
        if "instruction/response pairs" in user:
            return {"pairs": [
                {"instruction": "What does this section explain?", "response": "How Zig prints numbers.",
                 "kind": "conceptual", "tests": "", "expected_stdout": ""},
                {"instruction": "Write a Zig program that runs lib.", "response": f"Here:\n\n{IMPORTS_MISSING}",
                 "kind": "code", "tests": "", "expected_stdout": ""},
            ]}
        return "ok"

    return answer


def _run(tmp: Path, srv: FakeOpenAI, **extra: Any) -> Any:
    doc = tmp / "doc.md"
    doc.write_text(zig_doc(1), encoding="utf-8")
    settings = load_settings(
        llm={"base_url": srv.base_url, "api_key": "sk-test", "model": "fake-model", "max_retries": 0},
        generator={"kind": "llm", "max_continuations": 0, "max_repairs": 1},
        validator={"cache_path": str(tmp / "verdicts.sqlite")},
        **extra,
    )
    return asyncio.run(arun([str(doc)], tmp / "out", settings))


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_conceptual_pairs_and_a_repair_loop_without_a_compiler(tmp_path: Path) -> None:
    still_missing = {"response": f"Fixed:\n\n{IMPORTS_MISSING}", "tests": ""}
    with FakeOpenAI(_responder(still_missing)) as srv:
        summary = _run(tmp_path, srv)
        repairs = [messages_text(r.body, "user") for r in srv.chat_requests()
                   if "failed when its code was checked" in messages_text(r.body, "user")]
    assert summary.failed_sections == 0 and summary.accepted == 1 and summary.reasons == {"unsupported": 1}, summary
    [kept] = _rows(tmp_path / "out" / "pairs.jsonl")
    assert kept["evidence"] == "conceptual" and kept["verdict"] is None
    assert len(repairs) == 1 and "imports not available to a single-file check: lib.zig" in repairs[0]
    [rejected] = _rows(tmp_path / "out" / "rejected.jsonl")
    pair = stored_pairs(tmp_path / "out")[rejected["id"]]
    assert [(a.n, a.verdict) for a in pair.attempts] == [(0, "unsupported"), (1, "unsupported")]
    assert "lib.zig" in (pair.attempts[1].feedback or "") and pair.evidence == "none"


def test_a_botched_repair_is_rejected_with_its_reason_and_its_tokens_count(tmp_path: Path) -> None:
    with FakeOpenAI(_responder({"response": "I cannot fix this.", "tests": ""})) as srv:
        summary = _run(tmp_path, srv)
        endpoint = dict(srv.tokens)
    assert summary.reasons == {"repair_failed: the repaired answer has no ```zig block": 1}, summary
    assert summary.tokens == endpoint  # the failed repair's tokens are counted too


def test_min_evidence_drops_pairs_below_it_with_a_counted_reason(tmp_path: Path) -> None:
    with FakeOpenAI(_responder({"response": "no", "tests": ""})) as srv:
        summary = _run(tmp_path, srv, curator={"min_evidence": "compiled"})
    assert summary.accepted == 0
    assert summary.reasons["below_min_evidence: conceptual < compiled"] == 1, summary
