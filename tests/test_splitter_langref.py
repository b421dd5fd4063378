"""Integration: the splitter on the real Zig 0.14.0 language reference (shipped as package data)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from doctune.agents.split_stats import summarize
from doctune.agents.splitter import _scan, split_paths
from doctune.core.settings import SplitSettings

from tests.conftest import LANGREF


def fence_open_at_end(text: str) -> bool:
    lines = _scan(text, mdx=False)
    return bool(lines) and lines[-1].role in ("open", "in")


@pytest.fixture(scope="module")
def sections(langref_path):
    return split_paths([langref_path], SplitSettings())


def test_langref_section_count_and_sizes(sections):
    summary = summarize(sections)
    assert summary["count"] >= 250
    # The doc's largest section (the PEG grammar, one 18 KB fence) must stay whole.
    assert summary["size"]["max"] >= 18_000
    assert summary["size"]["min"] >= 200  # every short section was merged into a neighbour
    assert summary["languages"]["zig"] == 502  # every fenced block counted exactly once
    assert summary["code_blocks"] == 778


def test_langref_no_section_cut_inside_a_fence(sections):
    for s in sections:
        assert not fence_open_at_end(s.text), f"{s.heading_path} part {s.part} ends inside a code fence"
        first = s.text.lstrip().splitlines()[0]
        assert not first.startswith(("# ***", "# First Byte")), f"{s.heading_path} starts inside the grammar"


def test_langref_grammar_comments_are_not_headings(sections):
    titles = {s.title for s in sections}
    assert not any(t.startswith("***") for t in titles)
    grammar = [s for s in sections if s.path[-1:] == ["Grammar"]]
    assert len(grammar) == 1 and grammar[0].stats.languages.get("peg") == 1


def test_langref_ids_unique_and_stable(sections):
    assert len({s.id for s in sections}) == len(sections)
    again = split_paths([LANGREF], SplitSettings())
    assert [s.id for s in again] == [s.id for s in sections]


def test_langref_every_line_lands_in_one_section(sections):
    covered = sorted((s.start_line, s.end_line) for s in sections)
    for (_, end), (start, _) in zip(covered, covered[1:], strict=False):
        assert start > end  # no overlap, in order


def test_doctune_split_cli_writes_jsonl(tmp_path: Path):
    sibling = Path(sys.executable).with_name("doctune")  # the venv's script, even when the venv is not on PATH
    exe = str(sibling) if sibling.is_file() else shutil.which("doctune")
    if exe is None:
        pytest.skip("the `doctune` console script is not installed in this environment")
    out = tmp_path / "s.jsonl"
    proc = subprocess.run(
        [exe, "split", str(LANGREF), "-o", str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) >= 250 and {"id", "path", "text", "stats", "part"} <= rows[0].keys()
    assert "sections" in proc.stderr and "p90" in proc.stderr  # the summary table goes to stderr
