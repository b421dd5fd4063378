"""`doctune train --method grpo` on CPU with the real validator and Zig: rewards are logged per step, the adapter
is saved and reloads. Slow (sampling on CPU): marker ``slow``; needs the torch stack (``train``) and Zig (``zig``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

pytestmark = [pytest.mark.train, pytest.mark.slow, pytest.mark.zig]
# Sampling is token by token: on a small shared CPU box two OpenMP threads spin-wait on each other (measured here:
# 8x the CPU time of one thread per generated token), so the subprocess runs single-threaded.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}

HIDDEN = 'test "double" {\n    try std.testing.expectEqual(@as(i32, 8), double(4));\n}\n'


def rl_dataset(root: Path) -> Path:
    """Rows of the three kinds GRPO rewards: hidden tests, a reference program, a fragment; plus a conceptual row
    it must leave out."""
    from datasets import Dataset, DatasetDict

    def row(i: int, q: str, a: str, **kw: str | None) -> dict:
        return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "id": f"p{i}",
                "tests": kw.get("tests"), "expect_stdout": kw.get("expect_stdout")}

    rows = [
        row(0, "Write `pub fn double(x: i32) i32` in Zig.",
            "```zig\npub fn double(x: i32) i32 {\n    return x * 2;\n}\n```", tests=HIDDEN),
        row(1, "Write a Zig program that prints `hi` to stdout.",
            '```zig\nconst std = @import("std");\npub fn main() !void {\n    try std.io.getStdOut().writer().print("hi\\n", .{});\n}\n```'),
        row(2, "Declare a Zig constant `limit` of type u32 equal to 10.", "```zig\nconst limit: u32 = 10;\n```"),
        row(3, "What does `defer` do in Zig?", "It runs a statement when the enclosing scope exits."),
    ]
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(root / "dataset"))
    return root / "dataset"


def test_cli_grpo_logs_rewards_and_saves_a_reloadable_adapter(tmp_path: Path) -> None:
    ds = rl_dataset(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", "from doctune.app.cli import main; main()", "train", "--dataset", str(ds), "--method",
         "grpo", "--preset", "cpu-smollm2", "--max-steps", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=1800, env=ONE_THREAD,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("adapter")
    assert "hidden 1" in proc.stderr and "reference 1" in proc.stderr and "compile 1" in proc.stderr
    rewards = [json.loads(line) for line in (out / "rewards.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rewards] == [1, 2]
    assert all(r["n"] == 2 and len(r["rewards"]) == 2 for r in rewards)  # num_generations completions a step
    assert all(x in (0.0, 0.5, 1.0) for r in rewards for x in r["rewards"])
    losses = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses] == [1, 2] and all("reward" in r for r in losses)
    result = json.loads((out / "train_result.json").read_text())
    assert result["method"] == "grpo" and result["steps"] == 2
    args = json.loads((out / "training_args.json").read_text())
    assert args["method"] == "grpo" and args["grpo"]["num_generations"] == 2

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from doctune.trainer.hf_backend import resolve_model_path

    conf = json.loads((out / "adapter" / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(conf["base_model_name_or_path"]))
    model = PeftModel.from_pretrained(base, str(out / "adapter"))
    assert any("lora_A" in n for n, _ in model.named_parameters())
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape[-1] == base.config.vocab_size and torch.isfinite(logits).all()


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_grpo_follows_sft_on_the_same_run(tmp_path: Path, one_thread: None) -> None:
    """--method sft+grpo: SFT into OUT/sft, then GRPO starts from that adapter (recorded) into OUT. The reward
    comes through the injected validate_many (here a fake at that seam: every program passes)."""
    from safetensors.torch import load_file

    from doctune.core.schemas import CodeCheck, Verdict
    from doctune.trainer.api import train

    from tests.test_train_cpu import make_dataset

    calls: list[list[CodeCheck]] = []

    async def validate_many(checks: list[CodeCheck]) -> list[Verdict]:
        calls.append(checks)
        return [Verdict(verdict="ok", stage="run") for _ in checks]

    res = train(make_dataset(tmp_path), tmp_path / "out", preset="cpu-smollm2", max_steps=1, method="sft+grpo",
                validate_many=validate_many, show_progress=False, overrides={"max_completion_length": 16})
    assert res.method == "grpo" and res.steps == 1 and (tmp_path / "out" / "sft" / "adapter").is_dir()
    args = json.loads((res.out_dir / "training_args.json").read_text())
    assert args["from_adapter"] == str(tmp_path / "out" / "sft" / "adapter")
    assert json.loads((tmp_path / "out" / "sft" / "training_args.json").read_text())["method"] == "sft"
    lora_b = [w for k, w in load_file(str(res.adapter_dir / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b)  # SFT's update carried over (a fresh LoRA B is 0)
    assert len((res.out_dir / "rewards.jsonl").read_text().splitlines()) == 1
