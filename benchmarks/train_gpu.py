"""GPU training benchmark: Unsloth vs transformers+PEFT (bitsandbytes 4-bit), same data, same preset.

Without Hub access we build a model with Qwen2.5-3B-Instruct's architecture from its config (random weights,
saved once in a local folder, with SmolLM2's ChatML tokenizer) and train it with the ``seed-qwen2.5-3b`` preset on
synthetic ChatML conversations whose token lengths follow the dataset's distribution (a real export given with
``--dataset``, else a log-normal fit). Each backend runs in its own process (Unsloth patches transformers
globally). Reported per backend: tokens/s (after warm-up steps), peak VRAM, MFU (6·N·tokens/s over the GPU's
dense bf16 peak) and the projected time for 5,817 pairs x 3 epochs (the recipe took 70 min on a T4).

    python benchmarks/train_gpu.py --steps 30 --out /tmp/bench            # on a GPU machine
    python benchmarks/train_gpu.py --tiny --backends hf --steps 3 --cpu   # smoke test on CPU (tiny config)

Goals: Unsloth >= 1.8x tokens/s and <= 0.6x VRAM of the HF baseline, <= 6 min projected on an H100.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

QWEN25_3B = {  # Qwen/Qwen2.5-3B-Instruct config.json (architecture only)
    "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
    "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hidden_act": "silu",
}
TINY = {**QWEN25_3B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 49152, "max_position_embeddings": 4096}
RECIPE_PAIRS, RECIPE_EPOCHS = 5817, 3
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
             "T4": 65e12}
WORDS = ("const var fn pub return try defer errdefer comptime struct enum union error switch while for if else "
         "allocator slice pointer optional test expect std mem fmt print").split()


def build_model(folder: Path, arch: dict[str, Any]) -> Path:
    """A random-weight Qwen2 model with ``arch``, plus SmolLM2's ChatML tokenizer, saved once."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from doctune.trainer.smollm2 import hf_model_dir

    tok = AutoTokenizer.from_pretrained(hf_model_dir())
    config = Qwen2Config(**arch, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = Qwen2ForCausalLM(config).to(dtype)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def target_lengths(dataset: Path | None, n: int, seed: int) -> list[int]:
    """Token lengths to imitate: resampled from a real export, else log-normal (median 300, clipped)."""
    rng = random.Random(seed)
    if dataset is not None:
        from transformers import AutoTokenizer

        from doctune.trainer.data import conversation, load_splits, render
        from doctune.trainer.smollm2 import hf_model_dir

        tok = AutoTokenizer.from_pretrained(hf_model_dir())
        train, _ = load_splits(dataset)
        real = [len(tok(render(tok, conversation(r)))["input_ids"]) for r in train]
        return [rng.choice(real) for _ in range(n)]
    return [min(4000, max(64, int(rng.lognormvariate(math.log(300), 0.6)))) for _ in range(n)]


def synthetic_dataset(folder: Path, lengths: list[int], seed: int) -> Path:
    """ChatML conversations of about the given token lengths (a fifth prompt, the rest answer)."""
    from datasets import Dataset, DatasetDict

    rng = random.Random(seed)

    def text(tokens: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(max(1, tokens)))

    rows = [{"messages": [{"role": "user", "content": text(n // 5)}, {"role": "assistant", "content": text(n - n // 5)}]}
            for n in lengths]
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(folder))
    return folder


def worker_config(backend: str, model_dir: Path, steps: int, cpu: bool) -> Any:
    """The preset as each backend runs it. Both render with the tokenizer's own ChatML template: Unsloth's
    'qwen-2.5' template would add Qwen's default system prompt, so the two would train on different tokens."""
    from doctune.trainer.config import resolve_config

    over: dict[str, Any] = {"model": str(model_dir), "num_train_epochs": 1, "chat_template": None}
    if cpu:  # CPU smoke test: no 4-bit, no 8-bit optimizer, fp32
        over.update(load_in_4bit=False, optim="adamw_torch", dtype="float32", gradient_checkpointing=False)
    return resolve_config("seed-qwen2.5-3b", overrides=over, max_steps=steps, backend=backend)


def worker(args: argparse.Namespace) -> None:
    """One backend in this process; prints one JSON line."""
    from doctune.trainer.api import train_with_config

    cfg = worker_config(args.worker, args.model_dir, args.steps, args.cpu)
    res = train_with_config(cfg, args.data_dir, args.out / args.worker, show_progress=False)
    records = [json.loads(line) for line in res.loss_log.read_text().splitlines()]
    warm = min(args.warmup, len(records) - 1)
    a, b = records[warm - 1] if warm > 0 else {"tokens": 0, "elapsed_s": 0.0}, records[-1]
    rate = (b["tokens"] - a["tokens"]) / max(b["elapsed_s"] - a["elapsed_s"], 1e-9)  # warm-up steps left out
    print(json.dumps({"backend": args.worker, "steps": res.steps, "tokens_per_s": round(rate, 1),
                      "peak_mem_mb": res.peak_mem_mb, "mean_tokens": res.data.mean_tokens,
                      "final_loss": res.final_loss}))


def gpu_info() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return name, peak


def summarize(rows: list[dict[str, Any]], n_params: int, device: str, peak: float | None) -> str:
    lines = [f"Device: {device}; model: {n_params / 1e9:.2f} B parameters (random weights, Qwen2.5-3B "
             "architecture); preset seed-qwen2.5-3b", "",
             "| backend | tokens/s | peak memory (MiB) | MFU | projected 5,817 pairs x 3 epochs |",
             "|---|---|---|---|---|"]
    for r in rows:
        total = RECIPE_PAIRS * RECIPE_EPOCHS * r["mean_tokens"]
        mfu = f"{6 * n_params * r['tokens_per_s'] / peak:.1%}" if peak else "n/a"
        lines.append(f"| {r['backend']} | {r['tokens_per_s']:,.0f} | {r['peak_mem_mb']:,.0f} | {mfu} | "
                     f"{total / r['tokens_per_s'] / 60:.1f} min |")
    by = {r["backend"]: r for r in rows}
    if {"hf", "unsloth"} <= set(by):
        lines += ["", f"Unsloth / HF: {by['unsloth']['tokens_per_s'] / by['hf']['tokens_per_s']:.2f}x tokens/s "
                  f"(goal >= 1.8x), {by['unsloth']['peak_mem_mb'] / by['hf']['peak_mem_mb']:.2f}x memory "
                  "(goal <= 0.6x)"]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/doctune-train-bench"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5, help="Steps left out of the tokens/s measurement.")
    p.add_argument("--backends", default="hf,unsloth")
    p.add_argument("--dataset", type=Path, help="A real export whose length distribution to imitate.")
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--tiny", action="store_true", help="Tiny config (smoke test).")
    p.add_argument("--cpu", action="store_true", help="CPU smoke test: no 4-bit / 8-bit optimizer.")
    p.add_argument("--worker", choices=["hf", "unsloth"], help=argparse.SUPPRESS)
    p.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    arch = TINY if args.tiny else QWEN25_3B
    model_dir = build_model(args.out / ("model-tiny" if args.tiny else "model-qwen2.5-3b-arch"), arch)
    data_dir = synthetic_dataset(args.out / "data", target_lengths(args.dataset, args.examples, 3407), 3407)
    rows = []
    for backend in args.backends.split(","):
        cmd = [sys.executable, __file__, "--worker", backend, "--model-dir", str(model_dir), "--data-dir",
               str(data_dir), "--out", str(args.out), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        proc = subprocess.run(cmd + (["--cpu"] if args.cpu else []), capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{backend}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    n_params = _param_count(cfg)
    device, peak = gpu_info()
    report = summarize(rows, n_params, device, peak)
    (args.out / "results.json").write_text(json.dumps({"device": device, "rows": rows}, indent=2) + "\n")
    print(report)
    if len(rows) != len(args.backends.split(",")):
        sys.exit(1)


def _param_count(cfg: Any) -> int:
    h, i, layers, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h + (h + 2 * kv)  # q,o + k,v + MLP + norms + qkv bias
    return layers * per_layer + v * h * (1 if cfg.tie_word_embeddings else 2) + h


if __name__ == "__main__":
    main()
