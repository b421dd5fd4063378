"""Generation benchmark: the original recipe's sequential loop vs doctune's graph at concurrency 16.

Both talk to the same local OpenAI-compatible test server (tests/fakes/openai_server.py) with a fixed latency per
request, over the same sections (Zig 0.14 langref sections, as a generated Markdown doc). The server answers
conceptual pairs only, so no Zig compile runs and the wall times compare the generation loops themselves; the
doctune time is the whole run (split, fan-out, checkpoints, curate, export). Then the checkpoint DB size per
section at two run sizes (goal: flat, because state holds ids, not text).

    python benchmarks/generate.py                     # 200 sections, 0.5 s latency, concurrency 16
    python benchmarks/generate.py --sections 40 --latency 0.2 --sizes 20,80   # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test server lives in tests/fakes

from tests.fakes.openai_server import messages_text  # noqa: E402

LANGREF = ROOT.parent / "shared" / "corpus" / "zig-0.14.0-langref.md"
_TITLE = re.compile(r'section "(?P<h>[^"]*)"|^## (?P<t>.+)$', re.M)


def make_doc(path: Path, n: int, source: Path) -> None:
    """A Markdown doc of ``n`` sections cut from real langref text (200..4000 characters each, cycled)."""
    from doctune.agents.splitter import split_paths

    bodies = [s for s in split_paths([source]) if 200 <= len(s.text) <= 4000]
    parts = []
    for i in range(n):
        s = bodies[i % len(bodies)]
        text = s.text.split("\n", 1)[1] if s.text.startswith("#") else s.text
        parts.append(f"## {s.title} ({i})\n\n{text.strip()}\n")
    path.write_text("# Benchmark\n\nSections cut from the Zig 0.14.0 language reference.\n\n" + "\n".join(parts))


def responder(body: dict[str, Any]) -> Any:
    """Conceptual pairs about whichever section the prompt names (content-matched, order-free)."""
    user = messages_text(body, "user")
    m = _TITLE.search(user)
    title = (m.group("h") or m.group("t")) if m else "this section"
    pairs = [{"instruction": f"What does '{title}' say, point {k}?", "response": f"It says point {k} about {title}.",
              "kind": "conceptual"} for k in range(3)]
    if "Answer only as JSON lines" in user:  # the recipe's prompt
        return "\n".join(json.dumps({"instruction": p["instruction"], "response": p["response"]}) for p in pairs)
    return {"pairs": pairs}


@contextmanager
def server(latency: float, history: Path) -> Iterator[str]:
    """The test server in its own process (like a remote endpoint: its CPU does not compete with the client's
    event loop for the GIL). Yields the base URL; every request lands in ``history`` as a JSON line."""
    cmd = [sys.executable, "-m", "tests.fakes.openai_server", "--latency", str(latency),
           "--responder", "benchmarks.generate:responder", "--history-file", str(history)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip() if proc.stdout else ""
        if not line.startswith("BASE_URL="):
            raise RuntimeError(f"test server did not start: {line!r}")
        yield line.split("=", 1)[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def requests_in(history: Path) -> int:
    return len(history.read_text().splitlines()) if history.exists() else 0


def recipe_loop(doc: Path, base_url: str) -> tuple[float, int, int]:
    """The original hand-run script: one request at a time, continuation for long sections, lines parsed as
    they come. Returns (wall seconds, requests, pairs)."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="bench", max_retries=0)
    sections = re.split(r"(?m)^(?=## )", doc.read_text())[1:]
    t0, requests, pairs = time.monotonic(), 0, 0
    for text in sections:
        if len(text) < 200:
            continue
        previous = ""
        for _ in range(3 if len(text) > 5000 else 1):
            user = (f"From this documentation content:\n{text}\n{previous}\nWrite 2-3 instruction/response pairs, "
                    "conceptual questions or code tasks. Answer only as JSON lines "
                    '{"instruction": ..., "response": ...}.')
            r = client.chat.completions.create(model="bench", temperature=0.7, max_tokens=8192, messages=[
                {"role": "system", "content": "You are an expert in Zig who writes training pairs."},
                {"role": "user", "content": user}])
            requests += 1
            answer = (r.choices[0].message.content or "").replace("```json", "").replace("```", "")
            lines = [ln for ln in answer.splitlines() if ln.strip().startswith("{")]
            pairs += len(lines)
            previous = f"Previous answer:\n{answer}\nWrite 2-3 more pairs on different aspects."
    return time.monotonic() - t0, requests, pairs


def _warm_imports() -> None:
    """Import what the run will import, before the clock starts (the recipe loop's imports are not timed
    either): the benchmark compares loops, not interpreter start-up."""
    import datasets  # noqa: F401
    import datasketch  # noqa: F401  (the curator's MinHash; its import pulls in scipy, ~0.8 s)
    import langchain_openai  # noqa: F401
    import langgraph.checkpoint.sqlite.aio  # noqa: F401

    import doctune.agents.curator  # noqa: F401
    import doctune.agents.llm_generator  # noqa: F401
    import doctune.agents.validator  # noqa: F401
    import doctune.dataset  # noqa: F401
    import doctune.graph.graph  # noqa: F401


def doctune_run(doc: Path, out: Path, base_url: str, concurrency: int) -> tuple[float, int, Any]:
    """The whole doctune pipeline over the same doc. Returns (wall seconds, requests seen, summary)."""
    from doctune.runner import run_pipeline
    from doctune.settings import load_settings

    settings = load_settings(
        llm={"base_url": base_url, "api_key": "bench", "model": "bench", "max_retries": 2},
        generator={"kind": "llm", "concurrency": concurrency, "max_continuations": 2, "continuation_chars": 5000},
        curator={"decontaminate": False},
        dataset={"test_size": 0.1},
    )
    _warm_imports()
    t0 = time.monotonic()
    summary = asyncio.run(run_pipeline([str(doc)], out, settings, show_progress=False))
    return time.monotonic() - t0, 0, summary


def db_size_per_section(n: int, work: Path, concurrency: int) -> tuple[int, float]:
    doc, out = work / f"doc{n}.md", work / f"out{n}"
    make_doc(doc, n, LANGREF)
    with server(0.01, work / f"hist{n}.jsonl") as base_url:
        _, _, summary = doctune_run(doc, out, base_url, concurrency)
    if not (out / "state.sqlite").exists():
        raise RuntimeError("no checkpoint DB written")
    size = sum(p.stat().st_size for p in out.glob("state.sqlite*"))  # the DB and its WAL
    return summary.sections, size / max(1, summary.sections)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", type=int, default=200)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--sizes", default="50,400", help="run sizes for the checkpoint-DB measurement")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="doctune-bench-") as tmp:
        work = Path(tmp)
        doc = work / "bench.md"
        make_doc(doc, a.sections, LANGREF)
        history = work / "history.jsonl"
        with server(a.latency, history) as base_url:
            seq_s, seq_req, seq_pairs = recipe_loop(doc, base_url)
            par_s, _, summary = doctune_run(doc, work / "out", base_url, a.concurrency)
            par_req = requests_in(history) - seq_req
        print(f"sections: {a.sections}   server latency: {a.latency:.2f} s/request")
        print(f"recipe loop (sequential):   {seq_s:7.1f} s   {seq_req} requests, {seq_pairs} pairs")
        print(f"doctune (concurrency {a.concurrency:>2}):  {par_s:7.1f} s   {par_req} requests, "
              f"{summary.generated} pairs generated, {summary.accepted} kept")
        ratio = seq_s / par_s
        print(f"speed-up: {ratio:.1f}x  (goal >= 13x)")
        for n in (int(x) for x in a.sizes.split(",")):
            sections, per = db_size_per_section(n, work, a.concurrency)
            print(f"checkpoint DB at N={sections:>4}: {per / 1024:6.1f} KiB per section")
    return 0 if ratio >= 13 else 1


if __name__ == "__main__":
    sys.exit(main())
