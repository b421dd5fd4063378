"""What a training run leaves behind, shared by both backends.

``<out>/adapter/`` (LoRA weights + tokenizer, reloadable), ``merged/`` (optional 16-bit merge), ``loss.jsonl``,
``training_args.json``, ``train_result.json``, ``README.md`` (model card) and, only when a llama.cpp converter is
found, ``model.gguf``. Defines ``TrainResult``, ``save_outputs`` and ``find_gguf_converter``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from doctune.trainer.config import TrainConfig
from doctune.trainer.data import LengthStats


class TrainResult(BaseModel):
    """Summary of one training run (also written to ``train_result.json``)."""

    out_dir: Path
    adapter_dir: Path
    merged_dir: Path | None = None
    gguf_path: Path | None = None
    gguf_message: str | None = Field(None, description="Why no GGUF was written, when it was asked for.")
    loss_log: Path
    model_card: Path
    preset: str
    backend: str
    method: str = Field("sft", description="sft | grpo")
    rewards_log: Path | None = Field(None, description="GRPO: rewards.jsonl (one line per reward call).")
    base_model: str = Field(description="Where the base weights were loaded from.")
    steps: int
    epochs: float
    final_loss: float | None
    first_loss: float | None
    runtime_s: float
    tokens_per_s: float
    peak_mem_mb: float
    data: LengthStats


def run_summary(cfg: TrainConfig, backend: str, trainer: Any, train_output: Any, runtime: float,
                records: list[dict[str, Any]], data: LengthStats) -> dict[str, Any]:
    """The measured part of a ``TrainResult`` (shared by both backends)."""
    from doctune.trainer.callbacks import peak_memory_mb

    steps = int(train_output.global_step)
    seen = records[-1]["tokens"] if records else 0
    return {
        "preset": cfg.name, "backend": backend, "base_model": cfg.model, "steps": steps,
        "epochs": float(trainer.state.epoch or 0.0),
        "final_loss": records[-1]["loss"] if records else None,
        "first_loss": records[0]["loss"] if records else None,
        "runtime_s": round(runtime, 2),
        "tokens_per_s": round(seen / runtime, 1) if runtime > 0 else 0.0,
        "peak_mem_mb": peak_memory_mb(), "data": data,
    }


def find_gguf_converter() -> Path | None:
    """llama.cpp's ``convert_hf_to_gguf.py``: $LLAMA_CPP_DIR, then PATH."""
    env = os.environ.get("LLAMA_CPP_DIR")
    if env and (Path(env) / "convert_hf_to_gguf.py").is_file():
        return Path(env) / "convert_hf_to_gguf.py"
    found = shutil.which("convert_hf_to_gguf.py") or shutil.which("convert-hf-to-gguf")
    return Path(found) if found else None


def export_gguf(merged_dir: Path, out: Path) -> tuple[Path | None, str | None]:
    """Convert the merged model with llama.cpp's converter when present; else a message saying how to get it."""
    conv = find_gguf_converter()
    if conv is None:
        return None, ("GGUF export skipped: llama.cpp's convert_hf_to_gguf.py was not found (set LLAMA_CPP_DIR to a "
                      "llama.cpp checkout or put the script on PATH); the merged/ folder can be converted later")
    cmd = [sys.executable, str(conv), str(merged_dir), "--outfile", str(out), "--outtype", "f16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        return None, f"GGUF export failed ({conv.name} exit {proc.returncode}): {proc.stderr.strip()[-400:]}"
    return out, None


def save_outputs(
    model: Any, tokenizer: Any, cfg: TrainConfig, out_dir: Path, *, sft_args: dict[str, Any],
    result: dict[str, Any], merge: Callable[[Any, Any, Path], None] | None = None, method: str = "sft",
    from_adapter: Path | None = None,
) -> TrainResult:
    """Write the adapter, optional merge/GGUF, training args, model card and ``train_result.json``.

    ``merge`` replaces the PEFT merge (Unsloth merges its 4-bit base its own way); ``sft_args`` are the trainer's
    arguments (recorded under ``method``'s name: ``sft`` or ``grpo``); ``from_adapter`` is the adapter GRPO started from."""
    adapter = out_dir / "adapter"
    ckpt = out_dir / "checkpoints"  # the Trainer's output_dir; empty unless checkpointing was turned on
    if ckpt.is_dir() and not any(ckpt.iterdir()):
        ckpt.rmdir()
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    portable_base(adapter / "adapter_config.json", cfg.model)
    merged, gguf, gguf_msg = None, None, None
    if cfg.save_merged or cfg.export_gguf:
        merged = out_dir / "merged"
        (merge or merge_16bit)(model, tokenizer, merged)
    if cfg.export_gguf and merged is not None:
        gguf, gguf_msg = export_gguf(merged, out_dir / "model.gguf")
    args = {"config": cfg.public(), "method": method, method: _jsonable(sft_args), "data": result["data"].model_dump(),
            "from_adapter": None if from_adapter is None else str(from_adapter)}
    (out_dir / "training_args.json").write_text(json.dumps(args, indent=2) + "\n")
    res = TrainResult(
        out_dir=out_dir, adapter_dir=adapter, merged_dir=merged, gguf_path=gguf, gguf_message=gguf_msg,
        loss_log=out_dir / "loss.jsonl", model_card=out_dir / "README.md", method=method,
        rewards_log=out_dir / "rewards.jsonl" if method == "grpo" else None, **result,
    )
    res.model_card.write_text(model_card(cfg, res))
    (out_dir / "train_result.json").write_text(res.model_dump_json(indent=2) + "\n")
    return res


def portable_base(adapter_config: Path, model: str) -> None:
    """Record the preset's model name (e.g. 'smollm2-135m-instruct', resolved on any machine) instead of this
    machine's cache path. Done after saving: at save time PEFT would look an unknown name up on the Hub."""
    if adapter_config.is_file():
        data = json.loads(adapter_config.read_text())
        data["base_model_name_or_path"] = model
        adapter_config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def merge_16bit(model: Any, tokenizer: Any, merged: Path) -> None:
    import torch

    dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    full = model.merge_and_unload()
    full.to(dtype).save_pretrained(merged)
    tokenizer.save_pretrained(merged)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


def model_card(cfg: TrainConfig, res: TrainResult) -> str:
    targets = ", ".join(cfg.target_modules)
    loss = "assistant tokens only" if cfg.assistant_only_loss else "full text (the recipe's setting)"
    lines = [
        f"# LoRA adapter: {res.base_model} fine-tuned by doctune ({cfg.name})",
        "",
        "Trained on a compiler-verified Zig 0.14 instruction dataset generated by doctune.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{res.base_model}` |",
        f"| backend | {res.backend} |",
        f"| LoRA | r={cfg.lora_r}, alpha={cfg.lora_alpha}, dropout={cfg.lora_dropout}, targets: {targets} |",
        f"| optimizer | {cfg.optim}, lr {cfg.learning_rate}"
        + (f", embedding lr {cfg.embedding_learning_rate}" if cfg.embedding_learning_rate else "")
        + f", {cfg.lr_scheduler_type}, warmup {cfg.warmup_steps}, weight decay {cfg.weight_decay} |",
        f"| batch | {cfg.per_device_train_batch_size} x grad-accum {cfg.gradient_accumulation_steps} |",
        f"| method | {res.method}" + (f" (reward: Zig validator, {cfg.num_generations} completions per prompt, "
                                      f"beta {cfg.grpo_beta})" if res.method == "grpo" else "") + " |",
        f"| loss | {loss if res.method == 'sft' else 'GRPO policy loss on sampled completions'} |",
        f"| examples | {res.data.n} (longest {res.data.max_tokens} tokens, max_length {res.data.max_length}, "
        f"{res.data.truncated} cut) |",
        f"| steps / epochs | {res.steps} / {res.epochs:.2f} |",
        f"| loss first -> last | {res.first_loss} -> {res.final_loss} |",
        f"| runtime | {res.runtime_s:.1f} s, {res.tokens_per_s:,.0f} tokens/s, peak memory {res.peak_mem_mb:,.0f} MiB |",
        "",
        "Load it with PEFT: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), 'adapter')`, "
        "or evaluate it with `doctune eval --model tuned=<this folder>`.",
        "",
    ]
    if res.gguf_message:
        lines += [f"Note: {res.gguf_message}.", ""]
    return "\n".join(lines)
