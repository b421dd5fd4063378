"""What ``doctune split`` prints about a list of sections: counts, size percentiles, code blocks by language."""

from __future__ import annotations

import math
from collections import Counter

from rich.table import Table

from doctune.core.schemas import Section

_SIZE_POINTS = (("min", 0), ("p10", 10), ("p50", 50), ("p90", 90), ("max", 100))


def _percentile(sorted_vals: list[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..100) of a sorted list; 0 for no values."""
    if not sorted_vals:
        return 0
    rank = max(1, math.ceil(q / 100 * len(sorted_vals)))
    return sorted_vals[rank - 1]


def summarize(sections: list[Section]) -> dict:
    """Counts and size percentiles for the summary table (and for tests/reports)."""
    sizes = sorted(s.stats.chars for s in sections)
    langs: Counter[str] = Counter()
    for s in sections:
        langs.update(s.stats.languages)
    return {
        "count": len(sections),
        "documents": len({s.source for s in sections}),
        "split_parts": sum(1 for s in sections if s.part > 0),
        "size": {name: _percentile(sizes, q) for name, q in _SIZE_POINTS},
        "code_blocks": sum(langs.values()),
        "sections_with_code": sum(1 for s in sections if s.stats.code_blocks),
        "languages": dict(langs.most_common()),
    }


def stats_table(summary: dict) -> Table:
    """The Rich table ``doctune split`` prints: counts, size percentiles, code blocks by language."""
    table = Table(title="Sections", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("documents", str(summary["documents"]))
    table.add_row("sections", str(summary["count"]))
    table.add_row("  of which split parts", str(summary["split_parts"]))
    for name, value in summary["size"].items():
        table.add_row(f"size {name} (chars)", f"{value:,}")
    table.add_row("sections with code", str(summary["sections_with_code"]))
    table.add_row("code blocks", str(summary["code_blocks"]))
    for lang, n in summary["languages"].items():
        table.add_row(f"  {lang}", str(n))
    return table
