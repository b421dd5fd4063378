"""Pair checking without Zig: what runs for a pair, how verdicts make its status and evidence, vacuity, the
repair feedback, and the Zig-source stubber (verdicts are constructed here; the compiler is in test_triplets)."""

from __future__ import annotations

import asyncio

import pytest

from doctune.agents.checking import (
    HOLLOW_FEEDBACK,
    VACUOUS_FEEDBACK,
    already_repaired,
    blocks_to_check,
    code_hash,
    evidence_of,
    judge_pair,
    mode_for,
    plan,
    rejection_reason,
    repair_one,
    repair_request,
    vacuity_of,
    with_tests,
)
from doctune.agents.curator import below_min_evidence
from doctune.agents.generator import DocExampleGenerator
from doctune.core.schemas import Attempt, Expect, Pair, Verdict, ZigTestCounts
from doctune.core.settings import load_settings
from doctune.executors.zigstub import declared_test_names, param_names, strip_tests, stub_bodies

SOLUTION = 'const std = @import("std");\n\npub fn triple(x: i32) i32 {\n    return x * 3;\n}\n'
TESTS = ('const std = @import("std");\ntest "triple of 2" {\n    try std.testing.expectEqual(@as(i32, 6), triple(2));\n}\n'
         'test "triple of 0" {\n    try std.testing.expectEqual(@as(i32, 0), triple(0));\n}\n')


def pair(response: str = f"Here:\n\n```zig\n{SOLUTION}```\n", **kw: object) -> Pair:
    return Pair(id="p1", section_id="s", heading_path="H", source="d.md", instruction="Write triple.",
                response=response, generator="llm:m", **kw)


def ok(mode: str = "test", **kw: object) -> Verdict:
    if mode == "test":
        kw.setdefault("tests", ZigTestCounts(passed=2))
    return Verdict(verdict="ok", mode=mode, stage="run" if mode != "obj" else "compile", **kw)


def failed(names: list[str], unfinished: str | None = None) -> Verdict:
    return Verdict(verdict="test_failure", mode="test", stage="run", stderr="expected 6, found 4",
                   tests=ZigTestCounts(passed=1, failed=len(names), failed_names=names, unfinished=unfinished))


# ---------------------------------------------------------------- what runs


def test_plain_pair_checks_each_response_block_in_auto_mode() -> None:
    p = pair(response="a\n```zig\nconst a = 1;\n```\nb\n```zig\nconst b = 2;\n```\n")
    checks = plan(p)
    assert [(c.role, c.block.mode, c.block.code) for c in checks] == [
        ("block", "auto", "const a = 1;\n"), ("block", "auto", "const b = 2;\n")]


def test_what_happens_pair_checks_the_instructions_code_as_the_doc_ran_it() -> None:
    p = Pair(id="p", section_id="s", heading_path="H", source="d", generator="doc-examples",
             instruction="What happens?\n\n```zig\nconst x: u8 = 300;\n```", response="It does not compile.",
             expect=Expect(outcome="compile_error"), meta={"mode": "obj"})
    assert blocks_to_check(p) == ["const x: u8 = 300;\n"] and mode_for(p) == "obj"
    assert mode_for(p.model_copy(update={"expect": Expect(outcome="ok")})) == "auto"


def test_triplet_runs_solution_with_hidden_tests_and_a_stub_of_it() -> None:
    own_test = 'test "mine" { try std.testing.expect(triple(1) == 3); }\n'
    p = pair(response=f"```zig\n{SOLUTION}{own_test}```\n", tests=TESTS)
    roles = {c.role: c.block for c in plan(p)}
    assert set(roles) == {"hidden", "stub", "hollow"}  # the solution block is checked through its hidden tests
    hidden, stub = roles["hidden"], roles["stub"]
    assert hidden.mode == stub.mode == "test"
    assert hidden.code.count('const std = @import("std");') == 1  # the tests' repeat is dropped
    assert "return x * 3;" in hidden.code and 'test "mine"' in hidden.code and 'test "triple of 2"' in hidden.code
    assert "return x * 3;" not in stub.code and '@panic("stub")' in stub.code
    assert 'test "mine"' not in stub.code and 'test "triple of 0"' in stub.code  # only hidden tests judge a stub
    hollow = roles["hollow"]
    assert "return undefined;" in hollow.code and "return x * 3;" not in hollow.code and 'test "mine"' not in hollow.code


def test_a_solution_cannot_hand_the_tests_its_own_std_or_testing() -> None:
    """A test's one-line `const` is dropped only when the solution declares it the same way; a solution's fake
    `std` or `testing` meets the tests' own declaration, and the compiler refuses the duplicate."""
    fake = "const std = struct { pub const testing = struct { pub fn expectEqual(a: anytype, b: anytype) !void " \
           "{ _ = a; _ = b; } }; };\npub fn triple(x: i32) i32 { return x * 2; }\n"
    assert with_tests(fake, TESTS).count("const std =") == 2  # the tests' real std stays: a duplicate
    assert with_tests(fake, 'test "t" { try std.testing.expect(triple(1) == 3); }\n').count("const std =") == 2
    fake_testing = "const testing = struct { pub fn expect(ok: bool) !void { _ = ok; } };\n"
    tests = "const testing = std.testing;\n" + 'test "t" { try testing.expect(triple(1) == 3); }\n'
    assert with_tests(fake_testing + SOLUTION, tests).count("const testing =") == 2
    same = with_tests("pub  const std = @import( \"std\" );\nfn f() void {}\n", TESTS)
    assert same.count("const std") == 1  # the same declaration, spelled differently: one


def test_with_tests_declares_std_when_nobody_does() -> None:
    code = with_tests("fn one() i32 { return 1; }\n", 'test "one" { try std.testing.expect(one() == 1); }\n')
    assert code.count('const std = @import("std");') == 1
    assert code.index("fn one") < code.index("const std")  # the solution first: compiler lines match its own


# ---------------------------------------------------------------- verdicts -> pair


def test_evidence_of_each_kind_of_check() -> None:
    assert evidence_of(ok("test"), pair()) == "tested"
    assert evidence_of(ok("run"), pair()) == "ran"
    assert evidence_of(Verdict(verdict="ok", mode="obj", compiled_only=True, stage="compile"), pair()) == "compiled"
    claim = pair(expect=Expect(outcome="compile_error"))
    as_said = Verdict(verdict="compile_error", expected_met=True, mode="run", stage="compile")
    assert evidence_of(as_said, claim) == "compiled"  # the compiler's verdict was checked, nothing ran
    crash = Verdict(verdict="runtime_error", expected_met=True, mode="test", stage="run")
    assert evidence_of(crash, pair(expect=Expect(outcome="runtime_error"))) == "ran"  # a failing test is not "tested"
    assert evidence_of(Verdict(verdict="compile_error", stage="compile"), pair()) == "none"


def test_pair_takes_the_weakest_evidence_and_conceptual_without_code() -> None:
    r = judge_pair(pair(), {"block": [ok("test"), ok("obj", compiled_only=True)]}, can_repair=True)
    assert (r.status, r.evidence) == ("accepted", "compiled")
    r = judge_pair(pair(response="Prose only."), {}, can_repair=True)
    assert (r.status, r.verdict, r.evidence) == ("accepted", None, "conceptual")


def test_infra_error_anywhere_is_never_blamed_on_the_code() -> None:
    infra = Verdict(verdict="infra_error", stage="setup")
    r = judge_pair(pair(tests=TESTS), {"hidden": [failed(["main.test.triple of 2"])], "stub": [infra]},
                   can_repair=True)
    assert (r.status, r.verdict, r.evidence) == ("infra", infra, "none")


def test_first_failing_check_makes_the_pair_failing() -> None:
    bad = failed(["main.test.triple of 2"])
    r = judge_pair(pair(tests=TESTS), {"hidden": [bad], "stub": [failed(["x"])]}, can_repair=False)
    assert (r.status, r.verdict, r.evidence) == ("failing", bad, "none")


def test_non_vacuous_hidden_tests_make_it_tested() -> None:
    stub = failed([], unfinished="main.test.triple of 2")
    r = judge_pair(pair(tests=TESTS), {"hidden": [ok()], "stub": [stub]}, can_repair=True)
    assert (r.status, r.evidence) == ("accepted", "tested") and r.vacuity["status"] == "non_vacuous"


@pytest.mark.parametrize("can_repair", [True, False])
def test_vacuous_tests_go_to_repair_or_are_demoted(can_repair: bool) -> None:
    r = judge_pair(pair(tests=TESTS), {"hidden": [ok()], "stub": [ok()]}, can_repair=can_repair)
    assert r.vacuity["status"] == "vacuous"
    if can_repair:
        assert (r.status, r.evidence) == ("failing", "none")
    else:
        assert (r.status, r.evidence) == ("accepted", "ran") and "stub" in r.vacuity["demoted"]


def test_hidden_tests_that_did_not_all_report_passed_prove_nothing() -> None:
    stub = failed(["main.test.triple of 2"])
    for counts in (ZigTestCounts(passed=1, skipped=1), ZigTestCounts(passed=1), None):
        r = judge_pair(pair(tests=TESTS), {"hidden": [ok(tests=counts)], "stub": [stub]}, can_repair=True)
        assert (r.status, r.evidence, r.vacuity["status"]) == ("accepted", "ran", "unproven"), counts


def test_the_solutions_own_tests_cannot_stand_in_for_a_hidden_test_that_never_ran() -> None:
    """Passes are counted against the solution's tests and the hidden tests together: a hidden test nested in a
    container that nothing refers to never runs, and the solution's own test does not make up for it."""
    own = pair(response=f"```zig\n{SOLUTION}test \"own\" {{}}\n```\n",
               tests='const S = struct { test "real" { try std.testing.expect(triple(5) == 15); } };\n'
                     'test "runs" { _ = triple(1); }\n')
    stub = failed([], unfinished="main.test.runs")
    r = judge_pair(own, {"hidden": [ok(tests=ZigTestCounts(passed=2))], "stub": [stub]}, can_repair=True)
    assert (r.evidence, r.vacuity["status"]) == ("ran", "unproven")  # 2 passed of 3 declared
    r = judge_pair(own, {"hidden": [ok(tests=ZigTestCounts(passed=3))], "stub": [stub]}, can_repair=True)
    assert r.evidence == "tested"


def test_tests_that_read_the_source_prove_nothing_by_failing_on_the_stub() -> None:
    """`@embedFile(@src().file)` lets a test tell the stub from the solution without calling it."""
    peek = ('test "t" { const me = @embedFile(@src().file);\n'
            '    try std.testing.expect(std.mem.indexOf(u8, me, "stub") == null); }\n')
    r = judge_pair(pair(tests=peek), {"hidden": [ok(tests=ZigTestCounts(passed=1))], "stub": [failed(["t"])]},
                   can_repair=True)
    assert (r.status, r.evidence, r.vacuity["status"]) == ("accepted", "ran", "inconclusive")
    assert "@embedFile" in r.vacuity["demoted"]


def test_tests_that_call_the_solution_without_checking_it_are_vacuous() -> None:
    """`_ = triple(5);` fails on the stub (it panics) but passes on the hollow solution (returns undefined)."""
    stub = failed([], unfinished="main.test.triple of 2")
    r = judge_pair(pair(tests=TESTS), {"hidden": [ok()], "stub": [stub], "hollow": [ok()]}, can_repair=False)
    assert (r.status, r.evidence, r.vacuity["status"]) == ("accepted", "ran", "vacuous")
    assert "compute nothing" in r.vacuity["demoted"] and r.vacuity["hollow_verdict"] == "ok"
    r = judge_pair(pair(tests=TESTS), {"hidden": [ok()], "stub": [stub], "hollow": [failed(["t"])]},
                   can_repair=False)
    assert (r.evidence, r.vacuity["status"]) == ("tested", "non_vacuous")
    hollow_no_compile = Verdict(verdict="compile_error", stage="compile")  # `undefined` needed at comptime
    r = judge_pair(pair(tests=TESTS), {"hidden": [ok()], "stub": [stub], "hollow": [hollow_no_compile]},
                   can_repair=False)
    assert (r.evidence, r.vacuity["status"]) == ("tested", "non_vacuous")  # the stub decides


def test_vacuity_of_the_stubs_verdict() -> None:
    assert vacuity_of(ok()) == "vacuous"
    assert vacuity_of(failed(["t"])) == "non_vacuous"
    assert vacuity_of(Verdict(verdict="timeout", stage="run")) == "non_vacuous"
    assert vacuity_of(Verdict(verdict="compile_error", stage="compile")) == "inconclusive"
    r = judge_pair(pair(tests=TESTS), {"hidden": [ok()], "stub": [Verdict(verdict="compile_error", stage="compile")]},
                   can_repair=True)
    assert (r.status, r.evidence, r.vacuity["status"]) == ("accepted", "ran", "inconclusive")  # never "tested"


# ---------------------------------------------------------------- repair


def test_repair_feedback_names_the_hidden_test_that_failed() -> None:
    p = pair(tests=TESTS, verdict=failed(["main.test.triple of 2"]))
    req = repair_request(p)
    assert req.problem == "test_failure" and not req.rewrite_tests
    assert req.feedback.startswith('Hidden test "triple of 2" failed.') and "expected 6, found 4" in req.feedback
    stopped = repair_request(p.model_copy(update={"verdict": failed([], unfinished="main.test.triple of 0")}))
    assert 'stopped during hidden test "triple of 0"' in stopped.feedback


def test_repair_feedback_for_vacuous_tests_asks_for_new_tests() -> None:
    p = pair(tests=TESTS, verdict=ok(), meta={"vacuity": {"status": "vacuous"}})
    req = repair_request(p)
    assert (req.problem, req.feedback, req.rewrite_tests) == ("vacuous_tests", VACUOUS_FEEDBACK, True)
    assert rejection_reason(p) == "vacuous_tests"
    unchecked = {"status": "vacuous", "stub_verdict": "test_failure", "hollow_verdict": "ok"}
    req = repair_request(pair(tests=TESTS, verdict=ok(), meta={"vacuity": unchecked}))
    assert (req.problem, req.feedback, req.rewrite_tests) == ("vacuous_tests", HOLLOW_FEEDBACK, True)
    assert rejection_reason(pair(verdict=Verdict(verdict="compile_error"))) == "compile_error"


def test_repair_feedback_of_a_wrong_output_shows_what_was_printed() -> None:
    v = Verdict(verdict="wrong_output", mode="run", stage="run", stdout="41\n")
    assert "The program printed:\n41" in repair_request(pair(verdict=v)).feedback


def test_a_generator_that_cannot_repair_rejects_with_its_reason() -> None:
    p = pair(verdict=Verdict(verdict="compile_error"), attempts=[Attempt(n=0)])
    step = asyncio.run(repair_one(p, DocExampleGenerator(load_settings()), attempt=1))
    assert step.pair is None and not step.pending and step.rejected.startswith("repair_failed: ")


def test_a_repair_already_made_in_this_round_is_kept() -> None:
    p = pair(verdict=Verdict(verdict="compile_error"), attempts=[Attempt(n=0), Attempt(n=1)],
             meta={"usage": {"input": 7, "output": 3}})
    assert already_repaired(p, 1) and not already_repaired(p, 2)
    step = asyncio.run(repair_one(p, DocExampleGenerator(load_settings()), attempt=1))
    assert (step.pair, step.pending, step.tokens) == (None, True, {"input": 7, "output": 3})


def test_code_hash_covers_the_hidden_tests() -> None:
    assert code_hash(pair()) != code_hash(pair(tests=TESTS)) and code_hash(pair(response="prose")) is None


def test_min_evidence() -> None:
    assert below_min_evidence(pair(evidence="ran"), None) is None
    assert below_min_evidence(pair(evidence="tested"), "tested") is None
    assert below_min_evidence(pair(evidence="ran"), "tested") == "below_min_evidence: ran < tested"
    assert below_min_evidence(pair(evidence="conceptual"), "compiled") is not None


# ---------------------------------------------------------------- the stubber


def test_stub_replaces_bodies_and_keeps_signatures_literals_and_comments() -> None:
    code = ('pub fn add(a: i32, b: i32) i32 {\n    const s = "}{"; _ = s; // }\n    return a + b;\n}\n'
            "fn parse(comptime T: type, text: []const u8) error{Bad}!T {\n    return @intCast(text.len);\n}\n"
            "const Op = *const fn (i32) i32;\nextern fn puts(s: [*:0]const u8) c_int;\n")
    out = stub_bodies(code)
    assert 'pub fn add(a: i32, b: i32) i32 { _ = a; _ = b; @panic("stub"); }' in out
    # T is used in the return type: discarding it would be "pointless discard of function parameter"
    assert 'error{Bad}!T { _ = text; @panic("stub"); }' in out
    assert "const Op = *const fn (i32) i32;" in out and "extern fn puts(s: [*:0]const u8) c_int;" in out


def test_stub_keeps_generic_containers_and_stubs_their_methods() -> None:
    code = ("pub fn Stack(comptime T: type) type {\n    return struct {\n        len: usize = 0,\n"
            "        pub fn push(self: *@This(), x: T) void { self.len += 1; _ = x; }\n    };\n}\n")
    out = stub_bodies(code)
    assert "return struct {" in out and 'pub fn push(self: *@This(), x: T) void { _ = self; _ = x; @panic("stub"); }' in out


def test_param_names_skip_discards_varargs_and_comments() -> None:
    assert param_names("_: i32, comptime n: usize, noalias p: *u8") == ["n", "p"]
    assert param_names("x: anytype", "@TypeOf(x)") == []
    assert param_names("// the count\n    n: usize") == ["n"]


def test_test_declarations_are_found_named_and_stripped() -> None:
    code = 'fn f() void {}\ntest "a }" { const s = "{"; _ = s; }\ntest f { f(); }\ntest { }\n// test "no"\n'
    assert declared_test_names(code) == ["a }", "f", ""]
    assert [ln for ln in strip_tests(code).splitlines() if ln.strip()] == ["fn f() void {}", '// test "no"']


def test_test_declarations_with_comments_or_quoted_names_are_found_too() -> None:
    """Zig takes comments between `test` and its name, and `@"…"` decltest names: the stub must lose them too."""
    code = ('fn @"f g"() void {}\ntest // why\n"c" { }\ntest @"f g" { }\ntest\n// x\n{ }\n'
            'fn // note\n h(x: i32) i32 { return x; }\n')
    assert declared_test_names(code) == ["c", "f g", ""]
    assert "test" not in strip_tests(code).replace("// x", "")
    assert "return x;" not in stub_bodies(code)  # a commented `fn` head is stubbed as well
