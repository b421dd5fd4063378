"""`doctune eval`: base vs tuned (or any models, or answers from a file) on eval tasks with hidden tests, through
the validator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from doctune.app.cli.common import console, out, settings_from
from doctune.core.errors import ConfigError


def parse_models(items: list[str]) -> dict[str, str]:
    models: dict[str, str] = {}
    for item in items:
        label, sep, spec = item.partition("=")
        if not sep or not label or not spec:
            raise ConfigError(f"--model {item!r}: expected LABEL=SPEC, e.g. --model base=smollm2")
        if label in models:
            raise ConfigError(f"--model: label {label!r} given twice")
        models[label] = spec
    return models


def endpoint_client(settings: Any, models: dict[str, str]) -> Any:
    """For ``openai:`` models: a ChatCompleter with the key, timeout and retry rule of ``settings.llm`` (the
    evaluator has no client of its own); None when every model is local or an answers file."""
    if not any(spec.startswith("openai:") for spec in models.values()):
        return None
    from doctune.agents.chat import ChatCompleter

    return ChatCompleter(settings.llm)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for results.json and report.md.")],
        model: Annotated[list[str], typer.Option("--model", "-m", help="LABEL=SPEC (repeatable); SPEC = smollm2, "
                                                 "an adapter/model folder, openai:MODEL@BASE_URL, or "
                                                 "answers:FILE[#LABEL] (JSONL answers by task id).")],
        tasks: Annotated[list[Path] | None, typer.Option("--tasks", "-t", help="Task JSONL file (repeatable; "
                                                         "default: the shipped evals/zig-tasks.jsonl), e.g. a run's "
                                                         "eval-tasks.jsonl from `doctune export`.")] = None,
        dataset: Annotated[Path | None, typer.Option("--dataset", "-d", help="Also use this dataset's test split "
                                                     "as tasks.")] = None,
        samples: Annotated[int | None, typer.Option("--samples", "-k", min=1, help="Samples per task "
                                                    "(pass@k).")] = None,
        max_tasks: Annotated[int | None, typer.Option("--max-tasks", min=1, help="Evaluate a diverse slice of N "
                                                      "tasks.")] = None,
        max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", min=16, help="Answer budget "
                                                           "in new tokens (default 1536).")] = None,
        config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file.")] = None,
    ) -> None:
        """Generate with each model, validate the code against hidden tests, write results.json + report.md."""
        settings = settings_from(config, eval={"tasks": tasks, "samples": samples, "max_tasks": max_tasks,
                                               "max_new_tokens": max_new_tokens})
        models = parse_models(model)
        from doctune.agents.validator import Validator
        from doctune.trainer.evaluate import evaluate
        from doctune.trainer.pipeline import default_tasks

        e = settings.eval
        completer = endpoint_client(settings, models)
        try:
            results = evaluate(default_tasks(settings, dataset), models, out_dir, samples=e.samples,
                               max_tasks=e.max_tasks, max_new_tokens=e.max_new_tokens, validator=settings.validator,
                               make_checker=Validator, complete=completer.complete if completer else None,
                               cache_dir=settings.cache_dir)
        finally:
            if completer is not None:
                completer.close()
        data = results.dump()
        console.print(f"headline: {data['headline']}", highlight=False)
        for label, s in data["models"].items():
            line = f"{label}: {s['passed']}/{s['n']} passed, compiled {s['compiled']}, pass@1 {s['pass@1']:.3f}"
            if s.get("pass@k") is not None:
                line += f", pass@{s['k']} {s['pass@k']:.3f}"
            weak = (data["weakly_checked"] or {}).get("models", {}).get(label)
            if weak:
                line += f"; apart (own tests / exit 0 only): {weak['passed']}/{weak['n']}"
            cut = s["truncated"] + (weak["truncated"] if weak else 0)
            console.print(line + (f"; {cut} answer(s) cut at the token budget" if cut else ""), highlight=False)
        out.print(str(out_dir / "report.md"), highlight=False)
