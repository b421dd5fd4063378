"""GPU GRPO benchmark: Unsloth vs transformers+PEFT, same prompts, same reward (the Zig validator), same preset.

Prompts are the shipped eval tasks (``evals/zig-tasks.jsonl``: exact signatures, hidden tests or expected stdout),
written as a dataset whose rows carry ``tests`` / ``expect_stdout``, so the reward is the real one: the sandboxed
Zig validator, batched per step and cached. The model is ``--model`` (a local HF folder or Hub id, e.g.
Qwen/Qwen2.5-3B-Instruct: its completions compile sometimes, so the reward moves), else a random-weight model with
Qwen2.5-3B's architecture (``train_gpu.build_model``; its completions are noise of full length: the worst case for
generation, reward 0). The ``seed-qwen2.5-3b`` preset's GRPO values, LoRA on the linear projections only (GRPO
does not train the embeddings), the tokenizer's own chat template for both backends. Each backend runs in its own
process (Unsloth patches TRL globally). Reported per backend: seconds per step and tokens/s (prompt + completion,
after warm-up steps), the reward's share of a step, mean reward, peak memory.

    python benchmarks/train_grpo_gpu.py --steps 10 --out /tmp/grpo-bench              # on a GPU machine
    python benchmarks/train_grpo_gpu.py --tiny --cpu --backends hf --steps 2          # smoke test on CPU

Expected figures (benchmarks/RESULTS.md) stay blank until measured on a GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TASKS = HERE.parent / "evals" / "zig-tasks.jsonl"
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def rl_dataset(folder: Path, n: int) -> Path:
    """The first ``n`` eval tasks as training rows: the prompt, the reference as the answer, the hidden checks."""
    from datasets import Dataset, DatasetDict

    tasks = [json.loads(line) for line in TASKS.read_text().splitlines() if line.strip()][:n]
    rows = [{"messages": [{"role": "user", "content": t["prompt"]},
                          {"role": "assistant", "content": f"```zig\n{t['reference']}```"}],
             "id": t["id"], "tests": t.get("tests"), "expect_stdout": t.get("expect_stdout")} for t in tasks]
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(folder))
    return folder


def worker_config(backend: str, model: str, steps: int, cpu: bool) -> Any:
    from doctune.trainer.config import resolve_config

    over: dict[str, Any] = {"model": model, "chat_template": None, "target_modules": LINEAR,
                            "embedding_learning_rate": None}
    if cpu:  # smoke test: fp32, no 4-bit, tiny groups and completions
        over.update(load_in_4bit=False, optim="adamw_torch", dtype="float32", gradient_checkpointing=False,
                    per_device_train_batch_size=2, gradient_accumulation_steps=1, num_generations=2,
                    max_completion_length=16)
    return resolve_config("seed-qwen2.5-3b", overrides=over, max_steps=steps, backend=backend)


def worker(args: argparse.Namespace) -> None:
    """One backend in this process; prints one JSON line."""
    from doctune.agents.validator import validator_service
    from doctune.core.settings import ValidatorSettings
    from doctune.trainer.api import grpo_with_config

    cfg = worker_config(args.worker, str(args.model_dir), args.steps, args.cpu)
    validate_many, close = validator_service(ValidatorSettings())
    res = grpo_with_config(cfg, args.data_dir, args.out / args.worker, validate_many, close=close,
                           show_progress=False)
    steps = [json.loads(line) for line in res.loss_log.read_text().splitlines()]
    rewards = [json.loads(line) for line in (res.rewards_log or Path("/dev/null")).read_text().splitlines()]
    warm = min(args.warmup, len(steps) - 1)
    a, b = steps[warm - 1] if warm > 0 else {"tokens": 0, "elapsed_s": 0.0}, steps[-1]
    span = max(b["elapsed_s"] - a["elapsed_s"], 1e-9)
    measured = max(len(steps) - warm, 1)
    reward_s = sum(r["seconds"] for r in rewards[warm:]) / max(len(rewards) - warm, 1)
    scored = [x for r in rewards for x in r["rewards"] if x is not None]
    print(json.dumps({"backend": args.worker, "steps": res.steps, "s_per_step": round(span / measured, 2),
                      "tokens_per_s": round((b["tokens"] - a["tokens"]) / span, 1),
                      "reward_s_per_step": round(reward_s, 3),
                      "mean_reward": round(sum(scored) / len(scored), 4) if scored else None,
                      "peak_mem_mb": res.peak_mem_mb}))


def summarize(rows: list[dict[str, Any]], device: str, model: str) -> str:
    lines = [f"Device: {device}; model: {model}; preset seed-qwen2.5-3b (GRPO values)", "",
             "| backend | s/step | tokens/s | reward s/step | mean reward | peak memory (MiB) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['s_per_step']} | {r['tokens_per_s']:,.0f} | {r['reward_s_per_step']} | "
                     f"{r['mean_reward']} | {r['peak_mem_mb']:,.0f} |")
    by = {r["backend"]: r for r in rows}
    if {"hf", "unsloth"} <= set(by):
        lines += ["", f"Unsloth / HF: {by['hf']['s_per_step'] / by['unsloth']['s_per_step']:.2f}x steps/s, "
                  f"{by['unsloth']['peak_mem_mb'] / by['hf']['peak_mem_mb']:.2f}x memory"]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/doctune-grpo-bench"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2, help="Steps left out of the measurement.")
    p.add_argument("--backends", default="hf,unsloth")
    p.add_argument("--model", help="HF folder or Hub id (default: random weights, Qwen2.5-3B architecture).")
    p.add_argument("--prompts", type=int, default=60, help="How many eval tasks become prompts.")
    p.add_argument("--tiny", action="store_true", help="Tiny random model (smoke test).")
    p.add_argument("--cpu", action="store_true", help="CPU smoke test: fp32, tiny groups and completions.")
    p.add_argument("--worker", choices=["hf", "unsloth"], help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    sys.path.insert(0, str(HERE))
    from train_gpu import QWEN25_3B, TINY, build_model, gpu_info

    args.out.mkdir(parents=True, exist_ok=True)
    model = args.model or str(build_model(args.out / ("model-tiny" if args.tiny else "model-qwen2.5-3b-arch"),
                                          TINY if args.tiny else QWEN25_3B))
    data_dir = rl_dataset(args.out / "data", args.prompts)
    rows = []
    for backend in args.backends.split(","):
        cmd = [sys.executable, __file__, "--worker", backend, "--model-dir", model, "--data-dir", str(data_dir),
               "--out", str(args.out), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        proc = subprocess.run(cmd + (["--cpu"] if args.cpu else []), capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{backend}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    device, _ = gpu_info()
    (args.out / "results.json").write_text(json.dumps({"device": device, "model": model, "rows": rows}, indent=2))
    print(summarize(rows, device, model))
    if len(rows) != len(args.backends.split(",")):
        sys.exit(1)


if __name__ == "__main__":
    main()
