"""Secrets: with sentinel API keys (OpenAI key via env and via the TOML config, LangSmith key via env), a real
`doctune run` (llm generator against the fake OpenAI server, tracing to the LangSmith look-alike) and
`doctune status --json` must not let the keys out anywhere: stdout/stderr, every file under the output dir
(store, JSONL, dataset Arrow files, dataset card, run.json, the SQLite checkpoint DB byte for byte), the verdict
cache, the Postgres checkpoint tables (every row, when $DOCTUNE_TEST_PG_URL is set) and what was posted to
LangSmith (decoded bodies; the OpenAI key not even in a header - the LangSmith key is legitimately its header).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.langsmith_server import FakeLangSmith
from tests.fakes.openai_server import FakeOpenAI
from tests.reliability.conftest import bump, copy_cache
from tests.reliability.harness import (
    PG_ENV,
    clean_env,
    good_pair_responder,
    llm_env,
    no_traceback,
    pg_database,
    run_cli,
    zig_doc,
)

pytestmark = pytest.mark.zig
OPENAI_KEY = "sk-SENTINEL-openai-5c1e7f0a9b3d"
LS_KEY = "lsv2_pt_SENTINEL_langsmith_8e2b64d1"


def needles(secret: str) -> list[bytes]:
    """The key, and its middle third (a partly masked or truncated print still gives that away)."""
    n = len(secret)
    return [secret.encode(), secret[n // 3: 2 * n // 3].encode()]


class Leaks:
    """Places checked and what was found where."""

    def __init__(self, secrets: list[str]) -> None:
        self.needles = [x for s in secrets for x in needles(s)]
        self.places = 0
        self.found: list[str] = []

    def check(self, where: str, data: bytes | str, secrets: list[bytes] | None = None) -> None:
        blob = data.encode() if isinstance(data, str) else data
        self.places += 1
        self.found += [f"{where}: {x[:10]!r}..." for x in (secrets or self.needles) if x in blob]


@contextmanager
def _checkpoint(backend: str) -> Iterator[dict[str, str]]:
    if backend == "sqlite":
        yield {}
        return
    with pg_database() as url:
        yield {"DOCTUNE_CHECKPOINT__URL": url, "_pg": url}


def _pg_rows(url: str) -> bytes:
    """Every row of every table, as text and raw bytes (checkpoint blobs are bytea)."""
    import psycopg

    chunks: list[bytes] = []
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")]
        for t in tables:
            for row in conn.execute(f"SELECT * FROM {t}"):  # noqa: S608 - names from the catalog
                for v in row:
                    chunks.append(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode())
    return b"\n".join(chunks)


@pytest.mark.parametrize("key_via", ["env", "toml"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_keys_appear_nowhere(backend: str, key_via: str, tmp_path: Path, warm_cache: Path,
                             tally: dict[str, Any]) -> None:
    if backend == "postgres" and not os.environ.get(PG_ENV):
        pytest.skip(f"set {PG_ENV} to a throw-away PostgreSQL server")
    cache = copy_cache(warm_cache, tmp_path) if warm_cache.exists() else tmp_path / "verdicts.sqlite"
    doc = tmp_path / "secrets.md"
    doc.write_text(zig_doc(2, "Secrets"), encoding="utf-8")
    out = tmp_path / "out"
    leaks = Leaks([OPENAI_KEY, LS_KEY])
    with FakeLangSmith(zstd=True) as ls, FakeOpenAI(good_pair_responder, api_key=OPENAI_KEY) as srv, \
            _checkpoint(backend) as ckpt:
        trace = {"LANGSMITH_TRACING": "true", "LANGSMITH_ENDPOINT": ls.endpoint, "LANGSMITH_API_KEY": LS_KEY,
                 "LANGSMITH_PROJECT": "doctune-secrets", "DOCTUNE_VALIDATOR__CACHE_PATH": str(cache)}
        trace.update({k: v for k, v in ckpt.items() if not k.startswith("_")})
        args = ["run", str(doc), "--out", str(out), "--json"]
        if key_via == "env":
            env = llm_env(tmp_path, srv.base_url, api_key=OPENAI_KEY, **trace)
        else:
            cfg = tmp_path / "doctune.toml"
            cfg.write_text(f'[generator]\nkind = "llm"\n\n[llm]\nbase_url = "{srv.base_url}"\n'
                           f'api_key = "{OPENAI_KEY}"\nmodel = "fake-model"\nmax_retries = 1\n', encoding="utf-8")
            env = clean_env(tmp_path, **trace)
            args += ["--config", str(cfg)]
        r = run_cli(args, env, timeout=600)
        assert r.returncode == 0 and no_traceback(r.stderr), r.stderr[-3000:]
        assert srv.chat_requests(), "the fake model was not used"
        st = run_cli(["status", str(out), "--json"], env, timeout=120)
        assert st.returncode == 0, st.stderr[-2000:]
        assert ls.wait_for(lambda: any(x.get("end_time") and str(x.get("name", "")).startswith("doctune run")
                                       for x in ls.runs().values()), timeout=20)
        posted_bodies, posted_all = ls.bodies_text(), ls.all_text()
        pg_dump = _pg_rows(ckpt["_pg"]) if backend == "postgres" else None

    leaks.check("run stdout", r.stdout)
    leaks.check("run stderr", r.stderr)
    leaks.check("status --json", st.stdout + st.stderr)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert {"pairs.jsonl", "rejected.jsonl", "run.json"} <= {p.name for p in files}
    assert any(p.suffix == ".arrow" for p in files) and any(p.name == "README.md" for p in files)
    if backend == "sqlite":
        assert (out / "state.sqlite").is_file()
    for p in files:
        leaks.check(str(p.relative_to(out)), p.read_bytes())
    for p in sorted(cache.parent.glob(cache.name + "*")):  # the verdict cache (and its -wal/-shm)
        leaks.check(p.name, p.read_bytes())
    if pg_dump is not None:
        assert pg_dump, "no checkpoint rows in Postgres"
        leaks.check("postgres checkpoint tables", pg_dump)
    assert posted_bodies, "nothing was traced"
    leaks.check("LangSmith posted bodies", posted_bodies)
    leaks.check("LangSmith requests incl. headers", posted_all, needles(OPENAI_KEY))

    bump(tally, "secrets", leaks=len(leaks.found), places=leaks.places)
    assert not leaks.found, leaks.found
