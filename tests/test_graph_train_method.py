"""`train.method` in the graph: the train node trains by GRPO when asked, its reward validated by the run's own
validator (the Context's: one cache, one concurrency bound) on the graph's event loop, while the trainer calls it
from its own loop thread. Real Zig; the node's training run is slow (CPU sampling): marker ``slow``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from doctune.agents.validator import Validator
from doctune.core.settings import load_settings
from doctune.graph.context import Context
from doctune.trainer.reward import CodeCheck, LoopThread

pytestmark = pytest.mark.zig

PROGRAM = 'const std = @import("std");\npub fn main() !void {\n    try std.io.getStdOut().writer().print("hi\\n", .{});\n}\n'


def _context(tmp_path: Path, **train: object) -> Context:
    settings = load_settings(validator={"cache": False}, train=train)
    return Context(settings=settings, out_dir=tmp_path, validator=Validator(settings.validator))


def test_train_method_setting_is_checked() -> None:
    from doctune.core.errors import ConfigError

    assert load_settings().train.method == "sft"
    assert load_settings(train={"method": "sft+grpo"}).train.method == "sft+grpo"
    with pytest.raises(ConfigError, match="train.method"):
        load_settings(train={"method": "ppo"})


def test_the_reward_validates_with_the_runs_validator_from_the_trainers_thread(tmp_path: Path) -> None:
    ctx = _context(tmp_path)

    async def graph_side() -> list:
        validate_many = await ctx.areward_validator()
        trainer = LoopThread()  # what grpo_with_config runs its reward calls on
        try:
            checks = [CodeCheck(id="ok", code=PROGRAM, mode="run"),
                      CodeCheck(id="bad", code="pub fn main() void { return 1; }", mode="run")]
            return await asyncio.to_thread(trainer.run, validate_many(checks), 300)
        finally:
            trainer.close()

    ok, bad = asyncio.run(graph_side())
    assert (ok.verdict, ok.stdout, bad.verdict) == ("ok", "hi\n", "compile_error")
    assert ctx.validator is not None and ctx.validator.executions >= 1  # the run's validator did the work


@pytest.mark.slow
@pytest.mark.train
def test_the_graph_train_node_trains_by_grpo_when_asked(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    import torch
    from langgraph.runtime import Runtime

    from doctune.graph.nodes import train

    from tests.test_train_grpo import rl_dataset

    ds = rl_dataset(tmp_path)
    ctx = _context(tmp_path, method="grpo", preset="cpu-smollm2", max_steps=1,
                   overrides={"max_completion_length": 16})
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/test_train_grpo.py: sampling on a shared CPU
    try:
        got = asyncio.run(train({"export": {"dataset_path": str(ds)}}, Runtime(context=ctx)))["train"]
    finally:
        torch.set_num_threads(before)
    assert got["method"] == "grpo" and got["steps"] == 1
    assert Path(got["adapter"], "adapter_config.json").is_file()
    rewards = [json.loads(x) for x in Path(got["rewards_log"]).read_text().splitlines()]
    assert len(rewards) == 1 and all(r in (0.0, 0.5, 1.0, None) for r in rewards[0]["rewards"])
    assert ctx.validator is not None and ctx.validator.executions >= 1  # the reference program, at least
