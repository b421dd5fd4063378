"""Prompt templates: shipped as package data, strict about variables, hashed by content."""

from __future__ import annotations

import re

import jinja2.meta
import pytest

from doctune import prompts
from doctune.core.errors import ConfigError

GEN_VARS = dict(zig_version="0.14.0", heading_path="Values > Integers", source="langref.md",
                section_text="Zig has `u8`.\n```zig\nconst x: u8 = 1; // {}\n```", n_pairs=3, n_code=2, covered=[])


def test_all_templates_ship_and_declare_their_variables() -> None:
    names = prompts.names()
    assert {"generate_system", "generate_user", "repair", "judge", "format_feedback"} <= set(names)
    for name in names:
        src = prompts.source(name)
        header = src.split("-#}", 1)[0]
        assert header.startswith("{#-") and "Variables:" in header, name
        used = jinja2.meta.find_undeclared_variables(prompts._env().parse(src))
        declared = set(re.findall(r"^\s+([a-z_]+)\s+\(", header, re.M))
        assert used == declared, (name, used ^ declared)


def test_generate_user_grounds_in_section_and_version() -> None:
    text = prompts.render("generate_user", **GEN_VARS)
    assert "Zig 0.14.0" in text and "Values > Integers" in text and "const x: u8 = 1; // {}" in text
    assert "write 3 instruction/response pairs" in text and "2 of them must be code tasks" in text
    assert "a conceptual question" in text and "NEW" not in text
    cont = prompts.render("generate_user", **{**GEN_VARS, "covered": ["Explain u8", "Write a test for u8"]})
    assert "NEW" in cont and "- Explain u8" in cont and "- Write a test for u8" in cont
    only_code = prompts.render("generate_user", **{**GEN_VARS, "n_code": 3})
    assert "All 3 must be code tasks" in only_code


def test_missing_variable_is_an_error_not_empty_text() -> None:
    with pytest.raises(ConfigError, match="section_text"):
        prompts.render("generate_user", **{k: v for k, v in GEN_VARS.items() if k != "section_text"})
    with pytest.raises(ConfigError, match="not found"):
        prompts.render("nope")


def test_repair_and_judge_render() -> None:
    rep = prompts.render("repair", zig_version="0.14.0", instruction="Print 1", response="```zig\nx\n```",
                         problem="compile_error", compiler_output="error: use of undeclared identifier 'x'",
                         tests=None, rewrite_tests=False, expected_stdout="1\n")
    assert "compile error" in rep and "undeclared identifier" in rep and "must print exactly" in rep
    assert "<tests>" not in rep and '"tests": ""' in rep
    hidden = 'test "one" { try std.testing.expect(one() == 1); }'
    fix = prompts.render("repair", zig_version="0.14.0", instruction="Write one()", response="```zig\nx\n```",
                         problem="test_failure", compiler_output='Hidden test "one" failed.', tests=hidden,
                         rewrite_tests=False, expected_stdout=None)
    assert hidden in fix and 'Hidden test "one" failed.' in fix and "they stay as they are" in fix
    new_tests = prompts.render("repair", zig_version="0.14.0", instruction="Write one()", response="```zig\nx\n```",
                               problem="vacuous_tests", compiler_output="they pass on a stub", tests=hidden,
                               rewrite_tests=True, expected_stdout=None)
    assert "do not test its solution" in new_tests and "write new hidden tests" in new_tests
    j = prompts.render("judge", zig_version="0.14.0", instruction="Q", response="A", kind="conceptual",
                       evidence="none", section_text="DOC TEXT")
    assert "DOC TEXT" in j and "reference documentation" in j
    j2 = prompts.render("judge", zig_version="0.14.0", instruction="Q", response="A", kind="code",
                        evidence="tested", section_text=None)
    assert "<documentation>" not in j2 and '"tested"' in j2


def test_template_hash_tracks_content() -> None:
    h = prompts.template_hash("generate_system", "generate_user")
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    assert h == prompts.template_hash("generate_system", "generate_user")
    assert h != prompts.template_hash("generate_user", "generate_system")
    assert prompts.template_hash("repair") != prompts.template_hash("judge")
