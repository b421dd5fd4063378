"""Agreement with the language reference's annotated examples (../shared/corpus/langref-examples.jsonl).

Default run: a stratified sample of ~40 examples through the API. `slow`: all 287 through the CLI contract
(`doctune validate --jsonl IN --out OUT`), asserting ≥ 99 % agreement where not unsupported and ≤ 5 %
unsupported.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import pytest

from doctune.agents.validator import BlockInput, Validator
from doctune.core.settings import ValidatorSettings
from doctune.executors.local import LocalExecutor

from tests.test_validator import ZIG_CACHE

pytestmark = pytest.mark.zig


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stratified(rows: list[dict], n: int) -> list[dict]:
    """Every (kind, outcome, has options/files) group represented, proportionally, deterministic."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["kind"], r["expect"]["outcome"], bool(r.get("options") or r.get("files")))].append(r)
    out: list[dict] = []
    for key in sorted(groups):
        g = groups[key]
        take = max(1, round(n * len(g) / len(rows)))
        step = max(1, len(g) // take)
        out += g[::step][:take]
    return out


def agreement(verdicts: list[dict]) -> tuple[float, float, list[str]]:
    judged = [v for v in verdicts if v["verdict"] != "unsupported"]
    met = [v for v in judged if v["expected_met"] is True]
    misses = [
        f"{v['id']}: {v['verdict']} {v['stderr'][:200]!r}" for v in judged if v["expected_met"] is not True
    ]
    return len(met) / max(1, len(judged)), 1 - len(judged) / max(1, len(verdicts)), misses


def test_stratified_sample_agrees(examples_jsonl: Path, tmp_path: Path) -> None:
    sample = stratified(_rows(examples_jsonl), 40)
    assert 35 <= len(sample) <= 50
    settings = ValidatorSettings(cache_path=tmp_path / "v.sqlite", concurrency=2)
    validator = Validator(settings, LocalExecutor(settings, zig_cache=ZIG_CACHE))

    async def go() -> list[dict]:
        blocks = [BlockInput.model_validate(r) for r in sample]
        try:
            vs = await validator.validate_many(blocks)
        finally:
            await validator.aclose()
        return [{"id": b.id, **v.model_dump()} for b, v in zip(blocks, vs, strict=True)]

    rate, unsupported, misses = agreement(asyncio.run(go()))
    assert rate == 1.0, misses
    assert unsupported <= 0.05


@pytest.mark.slow
def test_full_corpus_agreement_via_cli(examples_jsonl: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from doctune.app.cli import app

    out = tmp_path / "v.jsonl"
    env = {
        "DOCTUNE_VALIDATOR__CACHE_PATH": str(tmp_path / "c.sqlite"),
        "DOCTUNE_VALIDATOR__ZIG_CACHE_DIR": str(ZIG_CACHE),
    }
    res = CliRunner().invoke(app, ["validate", "--jsonl", str(examples_jsonl), "--out", str(out)], env=env)
    assert out.is_file(), res.output
    verdicts = _rows(out)
    inputs = _rows(examples_jsonl)
    assert [v["id"] for v in verdicts] == [r["id"] for r in inputs]  # one line per input, input order
    keys = {"id", "verdict", "expected_met", "stage", "exit_code", "stdout", "stderr", "duration_s", "cached"}
    assert all(keys <= set(v) for v in verdicts)
    rate, unsupported, misses = agreement(verdicts)
    print(f"agreement {rate:.2%}, unsupported {unsupported:.2%}, misses: {misses}")
    assert rate >= 0.99, misses
    assert unsupported <= 0.05
