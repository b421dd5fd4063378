"""CPU training with the hf backend on the embedded SmolLM2-135M-Instruct: a few short steps change the LoRA
weights, the loss is logged, every output is written, and the adapter reloads and generates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

pytestmark = pytest.mark.train

ZIG_PAIRS = [
    ("Write `pub fn double(x: i32) i32` in Zig.", "```zig\npub fn double(x: i32) i32 {\n    return x * 2;\n}\n```"),
    ("How do you declare a constant in Zig?", "With `const`: `const limit: u32 = 10;`"),
    ("Write `pub fn isZero(x: u8) bool` in Zig.", "```zig\npub fn isZero(x: u8) bool {\n    return x == 0;\n}\n```"),
    ("What does `defer` do in Zig?", "It runs a statement when the enclosing scope exits."),
]


def make_dataset(root: Path) -> Path:
    """A tiny DatasetDict shaped like the export stage's output."""
    from datasets import Dataset, DatasetDict

    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "id": f"p{i}",
         "section_id": "s0", "heading_path": "Zig > Basics", "source": "sample.md", "generator": "test",
         "evidence": "compiled"}
        for i, (q, a) in enumerate(ZIG_PAIRS)
    ]
    DatasetDict({"train": Dataset.from_list(rows[:3]), "test": Dataset.from_list(rows[3:])}).save_to_disk(
        str(root / "dataset")
    )
    return root / "dataset"


def test_train_reload_generate(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from doctune.trainer.api import train
    from doctune.trainer.generate import LocalGenerator, parse_spec

    ds = make_dataset(tmp_path)
    res = train(ds, tmp_path / "train", preset="cpu-smollm2", max_steps=2, show_progress=False,
                overrides={"per_device_train_batch_size": 1, "gradient_accumulation_steps": 1,
                           "learning_rate": 1e-3, "warmup_steps": 0})
    assert res.steps == 2 and res.backend == "hf" and res.data.n == 3 and res.data.truncated == 0
    log = [json.loads(line) for line in res.loss_log.read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["loss"] > 0 for r in log)
    for name in ("adapter/adapter_model.safetensors", "adapter/tokenizer.json", "training_args.json",
                 "README.md", "train_result.json"):
        assert (res.out_dir / name).is_file(), name
    args = json.loads((res.out_dir / "training_args.json").read_text())
    assert args["config"]["name"] == "cpu-smollm2" and args["sft"]["max_length"] == res.data.max_length
    # LoRA B matrices start at zero: training must have moved them
    weights = load_file(str(res.adapter_dir / "adapter_model.safetensors"))
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert lora_b and any(torch.count_nonzero(w) > 0 for w in lora_b)
    cfg = json.loads((res.adapter_dir / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "smollm2-135m-instruct"  # portable, resolved at load time

    gen = LocalGenerator(parse_spec("tuned", str(res.out_dir)), max_new_tokens=12)
    [[answer]] = gen.generate(["Write `pub fn double(x: i32) i32` in Zig."])
    assert answer.text and "<|im_end|>" not in answer.text and "<|im_start|>" not in answer.text
    assert answer.finish_reason == "length" and answer.truncated  # 12 new tokens cannot hold an answer


@pytest.mark.slow
def test_cli_train_on_a_dataset(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", "from doctune.app.cli import main; main()", "train", "--dataset", str(ds), "--preset", "cpu-smollm2",
         "--max-steps", "1", "--set", "gradient_accumulation_steps=1", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("adapter")
    assert (tmp_path / "out" / "loss.jsonl").read_text().count("\n") == 1
