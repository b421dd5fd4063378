"""A training setting that cannot work (misspelled `train.preset`, unknown override, invalid value) is refused by
`doctune run --train` in preflight: one line naming the valid choices, the exit code of a config error, no request
to the LLM endpoint, no run state written."""

from __future__ import annotations

from pathlib import Path

import pytest

from doctune.core.errors import ConfigError
from doctune.trainer.config import resolve_config

from tests.fakes.openai_server import FakeOpenAI
from tests.reliability.harness import good_pair_responder, llm_env, no_traceback, run_cli, zig_doc


@pytest.mark.parametrize(("setting", "says"), [
    ("train.preset=cpu-smolm2", ["unknown preset 'cpu-smolm2' (did you mean 'cpu-smollm2'?)",
                                 "valid presets: cpu-smollm2, seed-qwen2.5-3b"]),
    ('train.overrides={"lora_rank": 4}', ["train.overrides.lora_rank: not a training setting (did you mean "
                                         "'lora_r'?)"]),
    ('train.overrides={"lora_r": 0}', ["train.lora_r: Input should be greater than or equal to 1"]),
])
def test_bad_train_setting_is_refused_before_any_request(tmp_path: Path, setting: str, says: list[str]) -> None:
    doc, out = tmp_path / "doc.md", tmp_path / "out"
    doc.write_text(zig_doc(2), encoding="utf-8")
    with FakeOpenAI(good_pair_responder) as srv:
        r = run_cli(["run", str(doc), "--out", str(out), "--train", "--set", setting], llm_env(tmp_path, srv.base_url))
        assert srv.history == []  # not even GET /models: the train settings are checked first
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and no_traceback(r.stderr), r.stderr
    for text in says:
        assert text in r.stderr
    assert not out.exists() or not any(out.iterdir())  # no run.json, no checkpoints, no sections


def test_set_reaches_the_run_settings(tmp_path: Path) -> None:
    """`--set` on `doctune run` takes any section.key, also without --train (then nothing about training runs)."""
    doc = tmp_path / "doc.md"
    doc.write_text(zig_doc(1), encoding="utf-8")
    r = run_cli(["run", str(doc), "--out", str(tmp_path / "out"), "--set", "split.max_depth=9"],
                llm_env(tmp_path, "http://127.0.0.1:9/v1"))
    assert r.returncode == 2 and "split.max_depth: Input should be less than or equal to 6" in r.stderr, r.stderr


def test_close_matches_are_suggested() -> None:
    with pytest.raises(ConfigError, match=r"'seed-qwen2\.5-3b'\?\); valid presets"):
        resolve_config("seed-qwen-2.5-3b")
    with pytest.raises(ConfigError) as e:
        resolve_config("llama")
    assert "did you mean" not in str(e.value) and "valid presets: cpu-smollm2, seed-qwen2.5-3b" in str(e.value)
