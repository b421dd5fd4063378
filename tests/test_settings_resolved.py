"""Settings are resolved once, in `load_settings`: the OpenAI variables as the lowest-priority source, one
`cache_dir` from which the verdict, Zig and model caches derive, a run id that later changes to the environment
cannot move; a server run's Context is built from its own `ServerRun`, never from the environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from doctune.agents.generator import generator_kind
from doctune.core.errors import ConfigError
from doctune.core.settings import load_settings
from doctune.graph.context import Context, ServerRun, resolve, server_run_schema
from doctune.graph.driver import compute_run_id

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "DOCTUNE_CACHE_DIR", "DOCTUNE_LLM__BASE_URL",
              "DOCTUNE_LLM__API_KEY", "DOCTUNE_VALIDATOR__CACHE_PATH", "DOCTUNE_VALIDATOR__ZIG_CACHE_DIR",
              "DOCTUNE_GENERATOR__KIND"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return monkeypatch


def test_openai_variables_fill_only_what_nothing_else_set(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("OPENAI_BASE_URL", "http://openai-env/v1")
    env.setenv("OPENAI_API_KEY", "sk-env")
    s = load_settings()
    assert s.llm.base_url == "http://openai-env/v1" and s.llm.api_key is not None
    assert s.llm.api_key.get_secret_value() == "sk-env"
    toml = tmp_path / "d.toml"
    toml.write_text('[llm]\nbase_url = "http://toml/v1"\n', encoding="utf-8")
    assert load_settings(toml).llm.base_url == "http://toml/v1"  # the file beats the OpenAI variable
    env.setenv("DOCTUNE_LLM__BASE_URL", "http://doctune-env/v1")
    assert load_settings(toml).llm.base_url == "http://doctune-env/v1"
    assert load_settings(toml, llm={"base_url": "http://cli/v1"}).llm.base_url == "http://cli/v1"
    env.setenv("OPENAI_BASE_URL", "")
    env.delenv("DOCTUNE_LLM__BASE_URL")
    assert load_settings().llm.base_url is None  # an empty variable is unset


def test_run_id_and_generator_come_from_the_resolved_settings(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = tmp_path / "d.md"
    doc.write_text("# T\n\ntext\n", encoding="utf-8")
    env.setenv("OPENAI_BASE_URL", "http://openai-env/v1")
    s = load_settings()
    before = compute_run_id([str(doc)], None, s)
    env.delenv("OPENAI_BASE_URL")  # the environment changes after the settings were built: nothing moves
    assert generator_kind(s) == "llm" and compute_run_id([str(doc)], None, s) == before
    assert compute_run_id([str(doc)], None, load_settings()) != before  # new settings, no endpoint: offline


def test_one_cache_dir(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = load_settings()
    assert s.cache_dir == tmp_path / "xdg" / "doctune"
    assert s.validator.cache_path == s.cache_dir / "verdicts.sqlite"
    assert s.validator.zig_cache_dir == s.cache_dir / "zig-cache"
    env.setenv("DOCTUNE_CACHE_DIR", str(tmp_path / "c"))
    s = load_settings(validator={"zig_cache_dir": str(tmp_path / "z")})
    assert s.validator.cache_path == tmp_path / "c" / "verdicts.sqlite"
    assert s.validator.zig_cache_dir == tmp_path / "z"  # a cache set on its own keeps its place
    toml = tmp_path / "d.toml"
    toml.write_text(f'cache_dir = "{tmp_path / "t"}"\n[split]\nmax_depth = 2\n', encoding="utf-8")
    env.delenv("DOCTUNE_CACHE_DIR")
    assert load_settings(toml).validator.cache_path == tmp_path / "t" / "verdicts.sqlite"


def test_a_server_run_gets_the_context_of_its_out_dir_and_config(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("DOCTUNE_OUT", "/never/read/here")  # read by the server entry point only (doctune/app/server.py)
    schema = server_run_schema(out_dir=str(tmp_path / "default"), config=None)
    run_a, run_b = schema(), schema(out_dir=str(tmp_path / "b"))
    ctx = resolve(run_a)
    assert isinstance(ctx, Context) and ctx.out_dir == tmp_path / "default" and resolve(run_a) is ctx
    assert resolve(run_b).out_dir == tmp_path / "b" and resolve(schema()) is ctx  # shared services per key
    assert isinstance(run_a, ServerRun) and resolve(ctx) is ctx
    with pytest.raises(ConfigError, match="context=Context"):
        resolve(None)


def test_no_hidden_configuration_reads() -> None:
    """doctune's own configuration is read in settings.py; what else touches the environment is named here."""
    allowed = {
        "doctune/core/settings.py",  # the settings sources: DOCTUNE_*, OPENAI_*, XDG_CACHE_HOME
        "doctune/app/server.py",  # the `langgraph dev` entry point's own options: DOCTUNE_OUT, DOCTUNE_CONFIG
        "doctune/core/corpus.py",  # DOCTUNE_CORPUS_DIR: where the (unshipped) Zig docs are, asked by the CLI/tests
        "doctune/app/cli/serve.py",  # builds the child server's environment (HF offline flags)
        "agents/validator_batch.py",  # Zig source text: a batched program reads DOCTUNE_PROG in its sandbox
        "trainer/unsloth_backend.py",  # UNSLOTH_ALLOW_CPU: Unsloth's own switch
        "trainer/outputs.py",  # LLAMA_CPP_DIR: where llama.cpp's converter lives (like PATH)
    }
    found = set()
    for folder in ("doctune", "agents", "graph", "trainer"):
        for f in (ROOT / folder).rglob("*.py"):
            if re.search(r"os\.environ|getenv\(", f.read_text(encoding="utf-8")):
                found.add(str(f.relative_to(ROOT)))
    assert found <= allowed, sorted(found - allowed)
    assert not {"graph/context.py", "trainer/generate.py", "trainer/smollm2.py"} & found


def test_the_trainer_gets_the_cache_dir_as_an_argument(tmp_path: Path) -> None:
    from doctune.trainer.config import resolve_config
    from doctune.trainer.hf_backend import resolve_model_path
    from doctune.trainer.smollm2 import MODEL_ID

    done = tmp_path / "models" / MODEL_ID
    done.mkdir(parents=True)
    (done / "doctune-converted.txt").write_text("converted\n")  # a finished conversion: reused, not redone
    cfg = resolve_config("cpu-smollm2", cache_dir=tmp_path)
    assert resolve_model_path(cfg.model, cfg.cache_dir) == str(done) == resolve_model_path("smollm2", tmp_path)
    assert "cache_dir" not in cfg.public()  # where this machine caches is not part of the recipe
    with pytest.raises(ConfigError, match="train.overrides.cache_dir: not a training setting"):
        resolve_config("cpu-smollm2", overrides={"cache_dir": "/x"})
