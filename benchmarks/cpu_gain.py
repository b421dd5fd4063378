"""Does a CPU LoRA on a real doctune dataset move SmolLM2-135M at all? Before vs after, measured.

    python benchmarks/cpu_gain.py --out /tmp/cpu-gain     # ~15-25 min on a 2-core box (the dataset step resumes)

1. The dataset: `doctune run` on the shipped Zig 0.14.0 language reference with the offline doc-example generator
   (every pair compiler-verified), resumed if ``OUT/run`` already holds it.
2. Training: the ``cpu-smollm2`` preset (LoRA r=8 on every projection, lr 1e-3) for ``--steps`` steps of
   ``--batch`` sequences of at most ``--max-seq-length`` tokens: the budget is printed and recorded.
3. Evaluation, base vs tuned, greedy, one sample: the simplest slice of the eval set -- the ``--tasks`` shipped
   tasks with the shortest reference solution -- plus the ``--dataset-tasks`` shortest tasks of the dataset's own
   held-out split (sections never trained on). Compile rate and pass@1 through the validator, as `doctune eval`.

Prints one table and writes ``OUT/cpu_gain.json``; the figures go into benchmarks/README.md as measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any


def build_dataset(out: Path) -> dict[str, Any]:
    from doctune.core import corpus
    from doctune.core.settings import load_settings
    from doctune.graph.driver import run_pipeline

    settings = load_settings(generator={"kind": "doc-examples"})
    t0 = time.monotonic()
    s = asyncio.run(run_pipeline([str(corpus.path("langref"))], out / "run", settings))
    return {"sections": s.sections, "generated": s.generated, "accepted": s.accepted, "rejected": s.rejected,
            "reasons": s.reasons, "splits": s.export.get("splits"), "dataset": s.export["dataset_path"],
            "wall_s": round(time.monotonic() - t0, 1), "status": s.status}


def train_adapter(dataset: str, out: Path, steps: int, batch: int, max_len: int) -> dict[str, Any]:
    from doctune.trainer.api import train

    res = train(dataset, out / "train", preset="cpu-smollm2", max_steps=steps, show_progress=False,
                overrides={"per_device_train_batch_size": batch, "max_seq_length": max_len})
    return {"adapter": str(res.adapter_dir), "steps": res.steps, "epochs": round(res.epochs, 3),
            "first_loss": res.first_loss, "final_loss": res.final_loss, "runtime_s": round(res.runtime_s, 1),
            "tokens_per_s": round(res.tokens_per_s, 1), "train_rows": res.data.n,
            "train_tokens": res.data.total_tokens, "truncated": res.data.truncated}


def simplest(tasks: list[Any], n: int) -> list[Any]:
    """The n tasks with the shortest reference solution (ties: id), a stated, reproducible notion of 'simple'."""
    return sorted((t for t in tasks if t.reference), key=lambda t: (len(t.reference), t.id))[:n]


def pick_tasks(dataset: str, n_shipped: int, n_dataset: int) -> list[Any]:
    from doctune.evals import task_files
    from doctune.trainer.data import load_splits
    from doctune.trainer.tasks import load_tasks, tasks_from_split

    _, test = load_splits(Path(dataset))
    from_split = tasks_from_split(test) if test is not None else []
    return simplest(load_tasks(task_files([])), n_shipped) + simplest(from_split, n_dataset)


def evaluate(tasks: list[Any], adapter: str, out: Path, max_new_tokens: int) -> dict[str, Any]:
    from doctune.agents.validator import Validator
    from doctune.trainer.evaluate import evaluate as run_eval

    res = run_eval(tasks, {"base": "smollm2", "tuned": adapter}, out / "eval", max_new_tokens=max_new_tokens,
                   make_checker=Validator)
    data = res.dump()
    return {"models": data["models"], "per_source": per_source(data["tasks"]),
            "report": str(out / "eval" / "report.md"), "n_tasks": len(tasks)}


def per_source(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """compiled / passed per (task source, model) from the evaluator's per-task rows."""
    table: dict[str, dict[str, dict[str, int]]] = {}
    for row in rows:
        for model, r in row["results"].items():
            cell = table.setdefault(row["source"], {}).setdefault(model, {"n": 0, "compiled": 0, "passed": 0})
            cell["n"] += 1
            cell["compiled"] += int(r["compiled"])
            cell["passed"] += int(r["passed"])
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/cpu-gain"))
    ap.add_argument("--steps", type=int, default=20, help="LoRA steps (the training budget)")
    ap.add_argument("--batch", type=int, default=2, help="sequences per step")
    ap.add_argument("--max-seq-length", type=int, default=384, help="tokens per sequence (longer are cut)")
    ap.add_argument("--tasks", type=int, default=6, help="shipped eval tasks (the simplest ones)")
    ap.add_argument("--dataset-tasks", type=int, default=6, help="held-out dataset tasks (the simplest ones)")
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (on a busy 2-core box one thread beats "
                    "two fighting the other processes)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    data = build_dataset(args.out)
    print(f"dataset: {data['accepted']} accepted of {data['generated']} pairs from {data['sections']} sections "
          f"(splits {data['splits']}, {data['wall_s']} s)", flush=True)
    tr = train_adapter(data["dataset"], args.out, args.steps, args.batch, args.max_seq_length)
    print(f"train: {tr['steps']} steps x {args.batch} seqs <= {args.max_seq_length} tokens ({tr['epochs']} epochs), "
          f"loss {tr['first_loss']} -> {tr['final_loss']}, {tr['runtime_s']} s", flush=True)
    tasks = pick_tasks(data["dataset"], args.tasks, args.dataset_tasks)
    ev = evaluate(tasks, tr["adapter"], args.out, args.max_new_tokens)
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "dataset": data, "train": tr, "eval": ev,
              "wall_s": round(time.monotonic() - t0, 1)}
    (args.out / "cpu_gain.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"\n{'model':<6} {'tasks':>5} {'compile rate':>12} {'pass@1':>7}")
    for label, s in ev["models"].items():
        print(f"{label:<6} {s['n']:>5} {s['compile_rate']:>12.3f} {s['pass@1']:>7.3f}")
    for src, models in ev["per_source"].items():
        cells = ", ".join(f"{m} {c['compiled']}/{c['n']} compiled {c['passed']}/{c['n']} passed"
                          for m, c in models.items())
        print(f"  {src}: {cells}")
    print(f"report: {ev['report']}  (total {result['wall_s']} s)")


if __name__ == "__main__":
    main()
