"""Bad inputs to `doctune run`: binary, non-UTF-8, empty and 50 MB docs, a doc without headings, bad config values
(TOML wrong type / out of range / bad syntax, a bad env value), an unreachable endpoint and a refused API key.

Each must end with ONE clear line on stderr (`error: ...` naming the problem), exit code != 0, no traceback, and
nothing written that a re-run would trip over: the same command, after fixing the input, must then succeed into
the same output dir. A doc over `split.max_doc_mb` (default 20 MB) is refused before it is read: splitting 50 MB
takes ~25 s and ~1 GB here and yields ~200k sections, days of generation - a size limit with a clear message is
the right answer for one file; a big corpus comes as many files (docs/scaling.md).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.reliability.conftest import bump, copy_cache
from tests.reliability.harness import clean_env, good_pair_responder, llm_env, no_traceback, run_cli, zig_doc

pytestmark = pytest.mark.zig
API_KEY = "sk-the-right-key"
GOOD_DOC = zig_doc(1, "Bad inputs")


@dataclass
class Ctx:
    tmp: Path
    doc: Path
    llm_url: str
    cache: Path

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(self.tmp, DOCTUNE_VALIDATOR__CACHE_PATH=str(self.cache), **extra)

    def toml(self, text: str) -> list[str]:
        cfg = self.tmp / "doctune.toml"
        cfg.write_text(text, encoding="utf-8")
        return ["--config", str(cfg)]


# A case: (break it -> extra args + env, fix it -> extra args + env, words the error line must contain).
Setup = Callable[[Ctx], tuple[list[str], dict[str, str]]]


@dataclass
class Case:
    bad: Setup
    fixed: Setup
    says: tuple[str, ...]


def _doc_case(content: bytes, *says: str) -> Case:
    def bad(c: Ctx) -> tuple[list[str], dict[str, str]]:
        c.doc.write_bytes(content)
        return [], c.env()

    def fixed(c: Ctx) -> tuple[list[str], dict[str, str]]:
        c.doc.write_text(GOOD_DOC, encoding="utf-8")
        return [], c.env()

    return Case(bad, fixed, says)


def _good(c: Ctx) -> tuple[list[str], dict[str, str]]:
    return [], c.env()


def _config_case(toml: str | None, env: dict[str, str], *says: str) -> Case:
    def bad(c: Ctx) -> tuple[list[str], dict[str, str]]:
        return (c.toml(toml) if toml is not None else []), c.env(**env)

    def fixed(c: Ctx) -> tuple[list[str], dict[str, str]]:
        return (c.toml("[validator]\nconcurrency = 2\n") if toml is not None else []), c.env()

    return Case(bad, fixed, says)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _llm_case(url: Callable[[Ctx], str], key: str, *says: str) -> Case:
    def bad(c: Ctx) -> tuple[list[str], dict[str, str]]:
        return ["--generator", "llm"], llm_env(c.tmp, url(c), key, DOCTUNE_VALIDATOR__CACHE_PATH=str(c.cache),
                                              DOCTUNE_LLM__TIMEOUT_S="5")

    def fixed(c: Ctx) -> tuple[list[str], dict[str, str]]:
        return ["--generator", "llm"], llm_env(c.tmp, c.llm_url, API_KEY, DOCTUNE_VALIDATOR__CACHE_PATH=str(c.cache))

    return Case(bad, fixed, says)


CASES: dict[str, Case] = {
    "binary file": _doc_case(b"\x7fELF\x02\x01\x01\x00\x00\x00binary", "binary"),
    "non-UTF-8": _doc_case("# Überschrift\n\nText in Latin-1.\n".encode("latin-1"), "UTF-8"),
    "empty doc": _doc_case(b"  \n\n", "empty"),
    "50 MB doc": _doc_case(GOOD_DOC.encode() * (50 * 2**20 // len(GOOD_DOC) + 1), "50.0 MB", "max_doc_mb"),
    "no headings": _doc_case(b"Just a paragraph of prose and no heading at all.\n" * 20, "no Markdown headings"),
    "TOML wrong type": _config_case('[validator]\nconcurrency = "many"\n', {}, "validator.concurrency"),
    "TOML out of range": _config_case("[split]\nmax_depth = 9\n", {}, "split.max_depth", "6"),
    "TOML syntax": _config_case("[llm\nmodel = \n", {}, "cannot read settings"),
    "TOML unknown key": _config_case("[validator]\nconcurency = 2\n", {}, "validator.concurency"),
    "bad env value": _config_case(None, {"DOCTUNE_VALIDATOR__RUN_TIMEOUT_S": "-3"}, "validator.run_timeout_s"),
    "unreachable endpoint": _llm_case(lambda c: f"http://127.0.0.1:{_closed_port()}/v1", API_KEY, "cannot reach"),
    "wrong API key (401)": _llm_case(lambda c: c.llm_url, "sk-wrong-key", "401", "API key"),
}


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(responder=good_pair_responder, api_key=API_KEY) as srv:
        yield srv


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(name: str, tmp_path: Path, llm: FakeOpenAI, warm_cache: Path,
                                     tally: dict[str, Any]) -> None:
    case = CASES[name]
    # The session's verdict cache (the first case fills it): the re-runs validate the same code.
    cache = copy_cache(warm_cache, tmp_path) if warm_cache.exists() else warm_cache
    ctx = Ctx(tmp_path, tmp_path / "doc.md", llm.base_url, cache)
    ctx.doc.write_text(GOOD_DOC, encoding="utf-8")
    out = tmp_path / "out"
    bump(tally, "bad_inputs", cases=1)

    args, env = case.bad(ctx)
    r = run_cli(["run", str(ctx.doc), "--out", str(out), *args], env, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0, f"accepted: {r.stderr[-2000:]}"
    assert no_traceback(r.stderr + r.stdout), r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(w in lines[0] for w in case.says), lines[0]
    assert API_KEY not in r.stderr and "sk-wrong-key" not in r.stderr
    assert not out.exists(), f"a refused run left {sorted(p.name for p in out.iterdir())}"

    args, env = case.fixed(ctx)
    again = run_cli(["run", str(ctx.doc), "--out", str(out), *args], env, timeout=600)
    assert again.returncode == 0 and no_traceback(again.stderr), again.stderr[-3000:]
    assert (out / "pairs.jsonl").read_text(encoding="utf-8").strip(), "the fixed re-run produced no pairs"
    bump(tally, "bad_inputs", rejected=1)
