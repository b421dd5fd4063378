"""The dataset card (dataset/README.md): counts, sources, generator, Zig version, evidence, licence."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from doctune.agents.dataset_yield import Yield, difficulty, markdown_rows, source_yields
from doctune.core import __version__
from doctune.core.schemas import Pair
from doctune.core.settings import Settings


def _zig_version() -> str:
    try:
        from doctune.core.zig import zig_version

        return zig_version()
    except Exception:  # the card must still be written when the toolchain vanished after validation
        return "unknown"


def yield_lines(sections: list[Yield], pairs: list[Pair]) -> list[str]:
    """The card's yield: per source, then per section (folded), and what curation kept."""
    kept = Counter(p.source for p in pairs)
    sources = source_yields(sections)
    return [
        "## Yield by source",
        "",
        "Sections -> pairs generated -> accepted by validation, by evidence level (tested > ran > compiled > "
        "conceptual) -> repairs needed (pairs accepted after a repair, and the repair rounds they took).",
        "",
        *markdown_rows(sources, "source"),
        "",
        f"- kept after curation: {', '.join(f'`{y.source}` {kept.get(y.source, 0)}' for y in sources) or 'none'}",
        "",
        f"<details><summary>Yield by section ({len(sections)})</summary>",
        "",
        *markdown_rows(sections, "section"),
        "",
        "</details>",
        "",
    ]


def write_card(path: Path, info: dict[str, Any], pairs: list[Pair], settings: Settings,
               sections: list[Yield] | None = None) -> None:
    """Render the card as Markdown with a YAML header the Hub understands; ``sections``: the run's yield rows."""
    prompt_hashes = sorted({p.prompt_hash for p in pairs if p.prompt_hash})
    repairs = Counter(max(0, len(p.attempts) - 1) for p in pairs)
    levels = Counter(difficulty(len(p.attempts)) or "unknown" for p in pairs)
    tok = info.get("tokens", {})
    lines = [
        "---",
        "license: mit",
        "task_categories: [text-generation]",
        "language: [en]",
        "tags: [zig, code, instruction-tuning, doctune]",
        "---",
        "",
        "# Zig instruction dataset (doctune)",
        "",
        "Instruction/response pairs in ChatML `messages` form, generated from documentation sections by doctune",
        f"{__version__}. Every Zig code block in an accepted pair was compiled and run or tested with Zig "
        f"{_zig_version()} (evidence column).",
        "",
        "## Counts",
        "",
        "| split | pairs |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info["splits"].items()],
        "",
        f"- accepted pairs: {info['pairs']}; rejected: {info['rejected']} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(info['reasons'].items())) or 'none'}); "
        f"failed sections: {info['failed_sections']}",
        f"- evidence: {', '.join(f'{k}: {v}' for k, v in sorted(info['evidence'].items())) or 'none'}",
        f"- accepted after k repairs: {', '.join(f'{k}: {v}' for k, v in sorted(repairs.items())) or 'none'}",
        f"- difficulty (attempts to pass: easy 1, medium 2, hard 3+; column `difficulty`): "
        f"{', '.join(f'{k}: {levels[k]}' for k in ('easy', 'medium', 'hard', 'unknown') if levels[k]) or 'none'}",
        f"- generators: {', '.join(f'{k}: {v}' for k, v in sorted(info['generators'].items())) or 'none'}",
        "- columns: `messages`, `id`, `section_id`, `heading_path`, `source`, `generator`, `evidence`, `tests` "
        "(a triplet's hidden Zig tests), `expect_stdout` (a program's stated stdout), `attempts`, `difficulty`; "
        "`doctune export` writes the test split's checkable pairs as eval tasks",
        f"- prompt template hashes: {', '.join(prompt_hashes) or 'n/a (no LLM prompts)'}",
        f"- tokens: input {tok.get('input', 0)}, output {tok.get('output', 0)}",
        "",
        "## Sources",
        "",
        *[f"- `{s}`" for s in info["sources"]],
        "",
        *yield_lines(sections or [], pairs),
        "## Method",
        "",
        "- Split: Markdown sections by heading (code-fence aware); train/test split **by section** "
        f"(test share {settings.dataset.test_size}, seed {settings.dataset.seed}).",
        f"- Validation executor: {settings.validator.executor} (sandbox: {settings.validator.sandbox}).",
        f"- Curation: dedup={settings.curator.dedup}, decontamination={settings.curator.decontaminate} "
        f"(n={settings.curator.decontam_ngram}), judge={settings.curator.judge}.",
        "",
        "## Licence",
        "",
        "Derived from the source documents listed above; their licences apply to the derived text (the Zig",
        "language reference is MIT-licensed, copyright Zig contributors).",
        "",
        f"_Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}._",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
