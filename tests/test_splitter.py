"""Splitter unit tests: fences, heading paths, depth, MDX, merges, splits, stable ids, stats, bad input via the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from doctune.agents.split_stats import stats_table, summarize
from doctune.agents.splitter import split_markdown, split_paths
from doctune.core.errors import InputError
from doctune.core.settings import SplitSettings

# No merging and no splitting unless a test asks for it.
RAW = SplitSettings(min_chars=0, max_chars=100_000)


def md(s: str) -> str:
    return textwrap.dedent(s).lstrip("\n")


def paths(text: str, settings: SplitSettings = RAW, source: str = "doc.md") -> list[str]:
    return [s.heading_path for s in split_markdown(md(text), source, settings)]


def balanced(text: str) -> bool:
    """A fence left open at the end of a section text means the section was cut inside code."""
    from doctune.agents.splitter import _scan

    lines = _scan(text, mdx=False)
    return not lines or lines[-1].role not in ("open", "in")


# --------------------------------------------------------------------------- fences


def test_hash_lines_inside_backtick_fence_are_not_headings():
    doc = """
    # Top

    ```python
    # not a heading
    ## nor this
    ```

    ## Child
    """
    secs = split_markdown(md(doc), "d.md", RAW)
    assert [s.heading_path for s in secs] == ["Top", "Top > Child"]
    assert "# not a heading" in secs[0].text and balanced(secs[0].text)


def test_tilde_and_four_backtick_fences():
    doc = """
    # A

    ~~~
    # inside tildes
    ```
    # still inside: a backtick line does not close a tilde fence
    ~~~

    # B

    ````markdown
    ```zig
    # inside, the inner 3-backtick line does not close a 4-backtick fence
    ```
    # still inside
    ````

    # C
    """
    assert paths(doc) == ["A", "B", "C"]


def test_fence_indented_in_list_item():
    doc = """
    # A

    - item:
      ```sh
      # a shell comment, not a heading (2-space indent: a heading if read outside the fence)
      ```
    - next item

    # B
    """
    secs = split_markdown(md(doc), "d.md", RAW)
    assert [s.heading_path for s in secs] == ["A", "B"]
    assert secs[0].stats.languages == {"sh": 1}


def test_inline_backticks_are_not_a_fence():
    doc = """
    # A

    ```not a fence``` because the info string holds backticks

    # B
    """
    assert paths(doc) == ["A", "B"]


# --------------------------------------------------------------------------- headings, paths, depth


def test_nested_heading_paths_levels_and_lines():
    doc = """
    Intro text before any heading.

    # A
    a
    ## B
    b
    ### C
    c
    ## D ##
    d
    # E
    ### F (skips a level)
    """
    secs = split_markdown(md(doc), "d.md", RAW)
    assert [s.path for s in secs] == [
        [],
        ["A"],
        ["A", "B"],
        ["A", "B", "C"],
        ["A", "D"],
        ["E"],
        ["E", "F (skips a level)"],
    ]
    assert [s.level for s in secs] == [0, 1, 2, 3, 2, 1, 3]
    assert secs[0].title == "(preamble)" and secs[0].text.strip() == "Intro text before any heading."
    assert [s.ordinal for s in secs] == list(range(7))
    assert (secs[1].start_line, secs[1].end_line) == (3, 4)
    assert secs[2].text == "## B\nb\n"


def test_depth_setting_keeps_deeper_headings_in_body():
    doc = "# A\n\n## B\n\n### C\n\n#### D\n"
    assert paths(doc, RAW.model_copy(update={"max_depth": 1})) == ["A"]
    assert paths(doc, RAW) == ["A", "A > B", "A > B > C"]
    assert paths(doc, RAW.model_copy(update={"max_depth": 4}))[-1] == "A > B > C > D"


def test_not_headings():
    doc = "# A\n\n#hashtag\n    # indented code\n\\# escaped\n"
    assert paths(doc) == ["A"]


def test_crlf_and_bom():
    secs = split_markdown("\ufeff# A\r\ntext\r\n## B\r\n", "d.md", RAW)
    assert [s.path for s in secs] == [["A"], ["A", "B"]]
    assert "\r" not in secs[0].text


# --------------------------------------------------------------------------- MDX


def test_mdx_import_export_stripped_jsx_kept():
    doc = """
    import Tabs from '@theme/Tabs';
    import {
      TabItem,
    } from '@theme/TabItem';
    export const meta = {
      title: "x",
    };

    # Install

    <Tabs>
      <TabItem value="zig">

    ```js
    import x from "y"; // in a fence: kept
    ```

      </TabItem>
    </Tabs>

    export const inline = 1;
    """
    secs = split_markdown(md(doc), "guide.mdx", RAW)
    assert [s.path for s in secs] == [["Install"]]  # no preamble: only import/export lines were there
    text = secs[0].text
    assert "<Tabs>" in text and "</TabItem>" in text and 'import x from "y"' in text
    assert "@theme" not in text and "title:" not in text and "export const" not in text


def test_plain_markdown_keeps_import_lines():
    secs = split_markdown("# A\n\nimport this line is prose\n", "a.md", RAW)
    assert "import this line" in secs[0].text


# --------------------------------------------------------------------------- merges


def body(n: int) -> str:
    return ("word " * (n // 5)).strip()


def test_small_child_merges_into_previous_parent_or_sibling():
    doc = f"# A\n\n{body(300)}\n\n## tiny1\n\nsmall\n\n## tiny2\n\nsmall\n\n# B\n\n{body(300)}\n"
    secs = split_markdown(doc, "d.md", SplitSettings(min_chars=200))
    assert [s.path for s in secs] == [["A"], ["B"]]
    assert "## tiny1" in secs[0].text and "## tiny2" in secs[0].text
    assert secs[0].end_line == 11


def test_small_intro_merges_into_next_child():
    doc = f"# A\n\n{body(300)}\n\n# B\n\nshort intro\n\n## B1\n\n{body(300)}\n"
    secs = split_markdown(doc, "d.md", SplitSettings(min_chars=200))
    assert [s.path for s in secs] == [["A"], ["B", "B1"]]  # the primary keeps its own path
    assert secs[1].text.startswith("# B\n\nshort intro") and secs[1].start_line == 5


def test_small_section_does_not_cross_chapters():
    doc = f"# A\n\n{body(300)}\n\n## A1\n\n{body(300)}\n\n### A1x\n\n{body(300)}\n\n## A2\n\nlonely\n\n# B\n\n{body(300)}\n"
    secs = split_markdown(doc, "d.md", SplitSettings(min_chars=200))
    assert [s.heading_path for s in secs] == ["A", "A > A1", "A > A1 > A1x", "A > A2", "B"]


def test_preamble_is_kept_even_when_small_as_part_of_next():
    secs = split_markdown(f"tiny preamble\n\n# A\n\n{body(300)}\n", "d.md", SplitSettings(min_chars=200))
    assert [s.path for s in secs] == [["A"]] and secs[0].text.startswith("tiny preamble")


# --------------------------------------------------------------------------- splits


def test_huge_section_splits_at_paragraphs_and_fences():
    paras = [f"Paragraph {i} " + body(400) for i in range(12)]
    fence = "```zig\n" + "\n\n".join(f"const x{i} = {i};" for i in range(40)) + "\n```"
    doc = "# Big\n\n" + "\n\n".join(paras[:6] + [fence] + paras[6:]) + "\n\n# Next\n\nend\n"
    settings = SplitSettings(min_chars=0, max_chars=1000)
    secs = [s for s in split_markdown(doc, "d.md", settings) if s.path == ["Big"]]
    assert len(secs) > 3 and [s.part for s in secs] == list(range(len(secs)))
    assert len({s.id for s in secs}) == len(secs)
    for s in secs:
        assert s.stats.chars <= 1000 and balanced(s.text)
        assert not s.text.startswith("\n") and s.text.endswith("\n")
    joined = "".join(s.text for s in secs)
    assert all(p in joined for p in paras) and fence in joined  # nothing lost, the fence is in one piece
    assert [s.start_line for s in secs] == sorted(s.start_line for s in secs)


def test_single_fence_longer_than_max_stays_whole():
    fence = "```zig\n" + "\n".join(f"const x{i} = {i}; // {'y' * 40}" for i in range(60)) + "\n```"
    doc = f"# Big\n\nintro\n\n{fence}\n\nafter " + body(300) + "\n"
    secs = split_markdown(doc, "d.md", SplitSettings(min_chars=0, max_chars=800))
    holder = [s for s in secs if fence in s.text]
    assert len(holder) == 1 and holder[0].stats.chars > 800
    assert holder[0].text.startswith("# Big")  # the heading and the short lead-in stay with the fence
    assert all(balanced(s.text) for s in secs)


def test_example_unit_is_kept_together():
    example = "**hello.zig**\n\n```zig\npub fn main() void {}\n```\n\nExpected: compiles and runs successfully.\n\n```text\n$ zig run hello.zig\n```"
    doc = "# Big\n\n" + body(850) + "\n\n" + example + "\n\n" + body(850) + "\n"
    secs = split_markdown(doc, "d.md", SplitSettings(min_chars=0, max_chars=900))
    assert len(secs) == 3 and example in secs[1].text


def test_huge_paragraph_without_blank_lines_is_cut_at_line_ends():
    lines = [f"- item {i} " + "z" * 60 for i in range(60)]
    secs = split_markdown(
        "# L\n\n" + "\n".join(lines) + "\n", "d.md", SplitSettings(min_chars=0, max_chars=1000)
    )
    assert len(secs) > 3 and all(s.stats.chars <= 1000 for s in secs)
    assert all(line in "".join(s.text for s in secs) for line in lines)


# --------------------------------------------------------------------------- ids and stats

DOC = """
# A

alpha

## B

beta

## B

second B with the same path

# C

gamma
"""


def test_ids_are_stable_unique_and_independent_of_content():
    first = split_markdown(md(DOC), "doc.md", RAW)
    again = split_markdown(md(DOC), "doc.md", RAW)
    assert [s.id for s in first] == [s.id for s in again]
    assert len({s.id for s in first}) == len(first) == 4
    edited = split_markdown(md(DOC).replace("beta", "beta, now with much more text"), "doc.md", RAW)
    assert [s.id for s in edited] == [s.id for s in first]
    assert edited[1].text != first[1].text
    other_source = split_markdown(md(DOC), "other.md", RAW)
    assert not {s.id for s in other_source} & {s.id for s in first}


def test_inserting_a_section_keeps_other_ids():
    first = {s.heading_path: s.id for s in split_markdown(md(DOC), "doc.md", RAW)}
    grown = md(DOC).replace("# C", "## New\n\nnew text\n\n# C")
    after = {s.heading_path: s.id for s in split_markdown(grown, "doc.md", RAW)}
    assert {k: after[k] for k in first} == first and "A > New" in after


def test_section_stats_and_summary():
    doc = (
        "# A\n\n```zig\nconst a = 1;\n```\n\n```zig\nconst b = 2;\n```\n\n```\nplain\n```\n\n# B\n\nno code\n"
    )
    secs = split_markdown(doc, "d.md", RAW)
    assert secs[0].stats.code_blocks == 3 and secs[0].stats.languages == {"none": 1, "zig": 2}
    assert secs[0].stats.chars == len(secs[0].text)
    assert secs[1].stats.code_blocks == 0 and secs[1].stats.languages == {}
    summary = summarize(secs)
    assert summary["count"] == 2 and summary["code_blocks"] == 3 and summary["sections_with_code"] == 1
    assert summary["languages"] == {"zig": 2, "none": 1}
    assert summary["size"]["min"] == secs[1].stats.chars and summary["size"]["max"] == secs[0].stats.chars
    assert stats_table(summary).row_count >= 8


def test_split_paths_walks_folders_sorted(tmp_path: Path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.mdx").write_text("# Z\n\nz\n")
    (tmp_path / "a.md").write_text("# A\n\na\n")
    (tmp_path / "notes.txt").write_text("# not markdown\n")
    (tmp_path / "c.markdown").write_text("# C\n\nc\n")
    secs = split_paths([tmp_path], RAW)
    assert [Path(s.source).name for s in secs] == [
        "a.md",
        "z.mdx",
        "c.markdown",
    ]  # sorted by path: a.md, b/, c
    assert secs[0].source == str(tmp_path / "a.md")


def test_library_errors_are_input_errors(tmp_path: Path):
    with pytest.raises(InputError, match="empty"):
        split_markdown(" \n\t\n", "x.md", RAW)
    with pytest.raises(InputError, match="no Markdown headings"):
        split_markdown("```\n# only in a fence\n```\n", "x.md", RAW)
    with pytest.raises(InputError, match="no Markdown headings"):
        split_markdown("#### too deep\n", "x.md", RAW)


# --------------------------------------------------------------------------- CLI

# Runs the `split` command through the real CLI wrapper (run_cli) in a fresh process, as `doctune split` does.
_CLI = """
import sys, typer
from doctune.app.cli import split
from doctune.app.cli.common import run_cli
app = typer.Typer(pretty_exceptions_enable=False)
app.callback()(lambda: None)
split.register(app)
sys.exit(run_cli(app))
"""


def run_split(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CLI, "split", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


BAD_INPUTS = {
    "missing": (None, "no such file"),
    "binary.md": (b"# A\n\x00\x01\x02", "binary"),
    "latin1.md": ("# Caf\xe9\n".encode("latin-1"), "not valid UTF-8"),
    "empty.md": (b"", "empty"),
    "blank.md": (b"  \n\n\t \n", "empty"),
    "noheading.md": (b"just prose\n\n```\n# in a fence\n```\n", "no Markdown headings"),
    "emptydir": ("dir", "no Markdown files"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_cli_bad_input_is_one_clean_line(tmp_path: Path, name: str):
    content, message = BAD_INPUTS[name]
    if content == "dir":
        (tmp_path / name).mkdir()
        (tmp_path / name / "readme.txt").write_text("# not markdown\n")
    elif content is not None:
        (tmp_path / name).write_bytes(content)
    proc = run_split(name, "-o", "out.jsonl", cwd=tmp_path)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and len(err.splitlines()) == 1, proc.stderr
    assert err.startswith("error:") and name in err and message in err
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_writes_jsonl_and_settings(tmp_path: Path):
    (tmp_path / "doc.md").write_text(md(DOC))
    (tmp_path / "cfg.toml").write_text("[split]\nmin_chars = 0\n")
    proc = run_split(
        "doc.md", "-o", "sub/out.jsonl", "--config", "cfg.toml", "--max-depth", "1", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "sub" / "out.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rows] == [["A"], ["C"]]  # --max-depth 1 keeps '##' in the body
    assert rows[0]["source"] == "doc.md" and rows[0]["stats"]["chars"] == len(rows[0]["text"])
    assert "sections" in proc.stderr and "wrote 2 sections" in proc.stderr
    bad = run_split("doc.md", "--max-chars", "10", cwd=tmp_path)
    assert bad.returncode != 0 and "split.max_chars" in bad.stderr and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- the shipped demo doc

SAMPLE = Path(__file__).resolve().parents[1] / "doctune" / "core" / "data" / "zig-sample.md"
_EXAMPLE_RE = re.compile(
    r"^\*\*(?P<name>[\w.]+\.zig)\*\*\n\n```zig\n(?P<code>.*?)^```\n\n(?P<expected>Expected: [^\n]+)$",
    re.M | re.S,
)


def sample_examples() -> list[re.Match[str]]:
    return list(_EXAMPLE_RE.finditer(SAMPLE.read_text(encoding="utf-8")))


def test_sample_doc_shape():
    text = SAMPLE.read_text(encoding="utf-8")
    assert len(text.encode()) < 15_000
    secs = split_paths([SAMPLE], SplitSettings())
    with_code = [s for s in secs if s.stats.languages.get("zig")]
    assert 8 <= len(with_code) <= 14 and all(s.part == 0 for s in secs)
    examples = sample_examples()
    # Every zig fence is a named example followed by its Expected line, as in the language reference.
    assert len(examples) == text.count("```zig") >= 12
    assert len({m["name"] for m in examples}) == len(examples)
    failing = [m for m in examples if "fails to compile" in m["expected"]]
    assert len(failing) == 1 and "containing: `" in failing[0]["expected"]


@pytest.mark.zig
@pytest.mark.slow
def test_sample_doc_examples_behave_as_annotated(tmp_path: Path):
    """Each example compiled and run with the real Zig 0.14.0 does what its Expected line says."""
    from doctune.core.zig import zig_exe

    env = {
        **os.environ,
        "ZIG_GLOBAL_CACHE_DIR": str(tmp_path / "cache"),
        "ZIG_LOCAL_CACHE_DIR": str(tmp_path / "cache"),
    }
    for m in sample_examples():
        (tmp_path / m["name"]).write_text(m["code"])
        mode = "test" if "zig test" in m["expected"] else "run"
        proc = subprocess.run(
            [str(zig_exe()), mode, m["name"]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if "fails to compile" in m["expected"]:
            message = re.search(r"containing: `(.+)`", m["expected"])[1]
            assert proc.returncode != 0 and f"error: {message}" in proc.stderr, (m["name"], proc.stderr)
        else:
            assert proc.returncode == 0, (m["name"], proc.stderr)
