"""Progress off a terminal: plain lines as things finish, and a heartbeat while a long step sends no update."""

from __future__ import annotations

import re
import time

import pytest

from doctune.app.progress import RunProgress


def _section(accepted: int, rejected: int) -> dict:
    return {"section": {"results": [{"accepted": ["p"] * accepted, "rejected": ["r"] * rejected}]}}


def test_plain_lines_and_heartbeat(capsys: pytest.CaptureFixture[str]) -> None:
    with RunProgress(plain=True, interval_s=0.3) as prog:
        prog.on_update({"split": {"section_ids": ["a", "b", "c"]}})
        prog.on_update(_section(2, 0))  # within the interval: no line per section
        prog.on_update(_section(1, 1))
        prog.on_update(_section(0, 1))  # the last section always gets its line
        prog.on_update({"export": {"pairs": 3}})
        time.sleep(1.0)  # a long step (training) with no update
    lines = capsys.readouterr().err.splitlines()
    assert all(re.match(r"^\[\d+:\d\d\] ", ln) for ln in lines), lines
    text = "\n".join(lines)
    assert "split: 3 sections" in text
    assert "sections 3/3: 3 accepted, 2 rejected" in text
    assert "export: done" in text
    beats = [ln for ln in lines if "working on train (if enabled)" in ln]
    assert 1 <= len(beats) <= 4, lines
    assert "\x1b[" not in text and "━" not in text  # no bar, no escape codes in a log file


def test_disabled_progress_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with RunProgress(enabled=False, plain=True, interval_s=0.1) as prog:
        prog.on_update({"split": {"section_ids": ["a"]}})
        time.sleep(0.3)
    assert capsys.readouterr().err == ""
