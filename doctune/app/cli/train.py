"""`doctune train`: LoRA-train a preset on an exported dataset (the heavy imports happen only when it runs).

``--method grpo`` (or ``sft+grpo``) rewards completions with the Zig validator: this command builds the
``validate_many`` function the trainer floor receives (``doctune.agents.validator.validator_service``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from doctune.app.cli.common import console, out, settings_from
from doctune.core.errors import ConfigError
from doctune.core.settings import TRAIN_METHODS


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` pairs; VALUE is read as JSON when it parses (numbers, true, lists), else as a string."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set lora_r=16")
        try:
            result[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            result[key.strip()] = raw
    return result


def default_out(dataset: Path) -> Path:
    """``<run out>/train`` for a run's dataset folder, else ``./doctune-train``."""
    d = dataset.resolve()
    if d.name == "dataset":
        return d.parent / "train"
    if (d / "dataset").is_dir():
        return d / "train"
    return Path("doctune-train")


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        dataset: Annotated[Path, typer.Option("--dataset", "-d", help="Exported dataset folder (or a run's out "
                                              "dir, or pairs.jsonl).")],
        out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: next to the "
                                                     "dataset, train/).")] = None,
        preset: Annotated[str | None, typer.Option(help="cpu-smollm2 | seed-qwen2.5-3b")] = None,
        max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after N steps.")] = None,
        backend: Annotated[str | None, typer.Option(help="auto | hf | unsloth")] = None,
        sets: Annotated[list[str] | None, typer.Option("--set", help="Override a training field: FIELD=VALUE "
                                                       "(repeatable), e.g. --set lora_r=16")] = None,
        full_text_loss: Annotated[bool, typer.Option("--full-text-loss", help="Loss on the whole text (the "
                                                     "recipe's setting) instead of assistant tokens only.")] = False,
        method: Annotated[str | None, typer.Option("--method", help="sft (default: train.method) | grpo (reward: "
                                                   "the Zig validator) | sft+grpo (SFT, then GRPO from its "
                                                   "adapter).")] = None,
        from_adapter: Annotated[Path | None, typer.Option("--from-adapter", help="GRPO: start from this SFT "
                                                          "adapter folder.")] = None,
        config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file.")] = None,
    ) -> None:
        """Train a LoRA adapter; writes adapter/, loss.jsonl (GRPO: + rewards.jsonl), training_args.json and a
        model card."""
        if method is not None and method not in TRAIN_METHODS:
            raise ConfigError(f"--method {method!r}: choose one of {', '.join(TRAIN_METHODS)}")
        settings = settings_from(config, train={"preset": preset, "max_steps": max_steps, "backend": backend,
                                                "method": method})
        t = settings.train
        method = t.method
        overrides = {**t.overrides, **parse_sets(sets or [])}
        if full_text_loss:
            overrides["assistant_only_loss"] = False
        from doctune.agents.validator import validator_service
        from doctune.trainer.api import train as run_train

        validate_many, close = validator_service(settings.validator) if "grpo" in method else (None, None)
        res = run_train(dataset, out_dir or default_out(dataset), preset=t.preset, max_steps=t.max_steps,
                        backend=t.backend, overrides=overrides, method=method, validate_many=validate_many,
                        close=close, init_adapter=from_adapter, cache_dir=settings.cache_dir)
        console.print(
            f"[green]trained[/] {res.preset} ({res.backend}, {res.method}) {res.steps} steps in {res.runtime_s:.0f} s;"
            f" loss {res.first_loss} -> {res.final_loss}; {res.tokens_per_s:,.0f} tokens/s; "
            f"peak {res.peak_mem_mb:,.0f} MiB"
        )
        if res.rewards_log is not None:
            console.print(f"rewards per step: {res.rewards_log}", highlight=False)
        if res.gguf_message:
            console.print(f"[yellow]note:[/] {res.gguf_message}")
        out.print(str(res.adapter_dir), highlight=False)
