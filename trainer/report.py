"""``report.md`` for an evaluation: the headline table (tasks checked by hidden tests or an expected stdout), the
weakly checked tasks apart, per-source breakdown, answers cut at the token budget, the two plots (training loss
curve, compile/pass-rate bars; matplotlib, Agg backend) and examples of fixed and regressed answers.

The first model label is the baseline and the last one the candidate ("before" / "after").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from doctune.trainer.specs import Generation
from doctune.trainer.tasks import EvalTask

MAX_EXAMPLES = 3
MAX_ANSWER_CHARS = 1500


def read_loss(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_loss(records: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    if records:
        ax.plot([r["step"] for r in records], [r["loss"] for r in records], marker="o", markersize=3)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
    else:
        ax.text(0.5, 0.5, "no training loss log was given", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_rates(models: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(models)
    compile_rate = [models[m]["compile_rate"] for m in labels]
    pass1 = [models[m]["pass@1"] for m in labels]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    width = 0.38
    xs = range(len(labels))
    b1 = ax.bar([x - width / 2 for x in xs], compile_rate, width, label="compiles")
    b2 = ax.bar([x + width / 2 for x in xs], pass1, width, label="passes its checks (pass@1)")
    ax.bar_label(b1, fmt="%.2f", fontsize=8)
    ax.bar_label(b2, fmt="%.2f", fontsize=8)
    ax.set_xticks(list(xs), labels)
    ax.set_ylim(0, 1.25)  # head room for the legend above the bars
    ax.set_ylabel("share of tasks")
    n = models[labels[0]]["n"] if labels else 0
    ax.set_title(f"Compile and pass rates on {n} tasks with hidden checks")
    ax.legend(loc="upper center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _table(models: dict[str, Any], samples: int) -> list[str]:
    head = ("| model | tasks | compiled | passed | compile rate | pass@1 |" + (f" pass@{samples} |" if samples > 1 else "")
            + " answers cut at the budget |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for label, s in models.items():
        row = f"| {label} | {s['n']} | {s['compiled']} | {s['passed']} | {s['compile_rate']:.2f} | {s['pass@1']:.3f} |"
        if samples > 1:
            row += f" {s['pass@k']:.3f} |"
        lines.append(row + f" {s.get('truncated', 0)} |")
    return lines


def _weak(data: dict[str, Any]) -> list[str]:
    weak = data.get("weakly_checked") or {}
    if not weak:
        return []
    return [f"### Not in the headline: {weak['what']}", "",
            "These answers were only checked by tests they wrote themselves or by exiting 0, which a trivial "
            "answer can satisfy; they are shown for information.", "", *_table(weak["models"], data["samples"]), ""]


def _truncated(data: dict[str, Any]) -> list[str]:
    budget = data.get("max_new_tokens")
    out = ["## Answers cut at the token budget", "",
           f"Budget: {budget} new tokens per answer." if budget else "Budget: set by each model's endpoint.", ""]
    cut = {label: [r["id"] for r in data["tasks"] if r["results"][label].get("truncated")]
           for label in data["tasks"][0]["results"]} if data["tasks"] else {}
    for label, ids in cut.items():
        shown = ", ".join(f"`{i}`" for i in ids[:20]) + (" ..." if len(ids) > 20 else "")
        out.append(f"- **{label}**: {len(ids)} task(s)" + (f": {shown}" if ids else ""))
    return [*out, "", "A cut answer usually fails for that reason alone: its code ends mid-way.", ""]


_HOW = {"hidden_tests": "hidden tests", "expected_stdout": "expected stdout",
        "own_tests": "the answer's own tests (not in the headline)", "exit_status": "exit 0 only (not in the headline)"}


def _by_source(rows: list[dict[str, Any]], labels: list[str]) -> list[str]:
    kinds = sorted({(r["source"], r.get("checked_by", "hidden_tests")) for r in rows})
    lines = ["| tasks from | checked by | tasks | " + " | ".join(f"{m} passed" for m in labels) + " |",
             "|---|---|---|" + "---|" * len(labels)]
    for src, how in kinds:
        sel = [r for r in rows if (r["source"], r.get("checked_by", "hidden_tests")) == (src, how)]
        cells = [str(sum(r["results"][m]["passed"] for r in sel)) for m in labels]
        lines.append(f"| {src} | {_HOW.get(how, how)} | {len(sel)} | " + " | ".join(cells) + " |")
    return lines


def _example(task: EvalTask, before: Generation, after: Generation, rb: dict[str, Any], ra: dict[str, Any],
             labels: tuple[str, str]) -> list[str]:
    def clip(s: str) -> str:
        s = s.replace("````", "'''")
        return s if len(s) <= MAX_ANSWER_CHARS else s[:MAX_ANSWER_CHARS] + "\n... (cut)"

    out = [f"### {task.id} ({task.mode} mode)", "", "> " + task.prompt.splitlines()[0], ""]
    for label, ans, res in ((labels[0], before, rb), (labels[1], after, ra)):
        verdict = "passed" if res["passed"] else f"failed: {res.get('error', '')}"
        cut = " (answer cut at the token budget)" if ans.truncated else ""
        out += [f"**{label}** — {verdict}{cut}", "", "````text", clip(ans.text), "````", ""]
    return out


def write_report(results: Any, tasks: Sequence[EvalTask], answers: dict[str, list[list[Generation]]], out: Path,
                 *, loss_log: Path | None = None) -> Path:
    data = results.dump() if hasattr(results, "dump") else results
    models, rows, samples = data["models"], data["tasks"], data["samples"]
    labels = list(models)
    plot_loss(read_loss(loss_log), out / "loss.png")
    plot_rates(models, out / "pass_rates.png")
    md = ["# doctune evaluation", "",
          f"{len(rows)} tasks, {samples} sample(s) per task. A test-mode answer passes only if its code (the longest "
          "```zig block, with its own `test` blocks removed) compiles together with the task's hidden tests and "
          "every hidden test reports that it passed (a skipped test, or a binary that ends early, fails; the exit "
          "status alone never passes); a run-mode answer must exit 0 and print exactly the expected output. Each "
          "answer was compiled and run alone by Zig 0.14 in the sandboxed validator.", "",
          "## Results", "", f"Headline: {data.get('headline', 'all tasks')}.", "", *_table(models, samples), "",
          *_weak(data), *_by_source(rows, labels), "", *_truncated(data),
          "Models: " + ", ".join(f"`{k}` = `{v}`" for k, v in data["specs"].items()), "",
          "![pass rates](pass_rates.png)", "", "## Training loss", "",
          f"Loss log: `{loss_log}`" if loss_log else "No training loss log was given.", "",
          "![training loss](loss.png)", ""]
    if len(labels) >= 2:
        a, b = labels[0], labels[-1]
        by_id = {t.id: i for i, t in enumerate(tasks)}
        for title, want in (("Fixed", (False, True)), ("Regressed", (True, False))):
            hits = [r for r in rows if (r["results"][a]["passed"], r["results"][b]["passed"]) == want]
            md += [f"## {title} ({b} vs {a}): {len(hits)} task(s)", ""]
            for r in hits[:MAX_EXAMPLES]:
                i = by_id[r["id"]]
                md += _example(tasks[i], answers[a][i][0], answers[b][i][0], r["results"][a], r["results"][b],
                               (a, b))
            if not hits:
                md += ["None.", ""]
        same = [r for r in rows if r["results"][a]["passed"] == r["results"][b]["passed"]]
        md += [f"## Unchanged: {len(same)} task(s), first examples", ""]
        for r in same[:2]:
            i = by_id[r["id"]]
            md += _example(tasks[i], answers[a][i][0], answers[b][i][0], r["results"][a], r["results"][b], (a, b))
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
