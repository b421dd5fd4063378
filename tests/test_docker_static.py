"""docker/ checked without a Docker engine: the compose file parses and its services, ports and environment match
doctune's settings; the Codapi sandbox answers what the validator sends; the Dockerfiles install what exists."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
_VAR = re.compile(r"\$\{(?P<name>\w+)(?::?[-?](?P<default>[^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with an empty environment (what a fresh checkout gets)."""
    return _VAR.sub(lambda m: m.group("default") or "", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: _interpolate(str(v)) for k, v in env.items()}


def _container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", [])}


def test_compose_services_volumes_and_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"app", "codapi", "postgres", "zig-box", "langgraph", "redis"} <= set(services)
    for name, svc in services.items():
        assert svc.get("image"), f"{name}: no image name"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy, but it has no check"
        for vol in svc.get("volumes", []):
            src = str(vol).split(":", 1)[0]
            if not src.startswith(("/", ".", "$")):
                assert src in (compose.get("volumes") or {}), f"{name}: named volume {src} is not declared"
            elif src.startswith("."):
                assert (DOCKER / src).exists() or src.startswith("../runs"), f"{name}: {src} does not exist"
    assert services["postgres"]["healthcheck"] and services["langgraph"]["healthcheck"]
    # Only localhost is published.
    for name, svc in services.items():
        for p in svc.get("ports", []):
            assert str(p).startswith("127.0.0.1:"), f"{name} publishes {p} beyond localhost"


def test_doctune_env_names_are_settings_and_values_load(compose: dict[str, Any], monkeypatch) -> None:
    from doctune.core.settings import Settings, load_settings

    for name in ("app", "langgraph"):
        env = _env(compose["services"][name])
        doctune_vars = {k: v for k, v in env.items() if k.startswith("DOCTUNE_")}
        assert doctune_vars, name
        for key in doctune_vars:
            if key == "DOCTUNE_OUT":  # read by the server entry point (doctune/app/server.py), not a setting
                continue
            section, _, field = key.removeprefix("DOCTUNE_").lower().partition("__")
            assert section in Settings.model_fields, f"{name}: {key} names no settings section"
            model = Settings.model_fields[section].annotation
            if not field:  # a top-level setting (cache_dir)
                assert not hasattr(model, "model_fields"), f"{name}: {key} names a section, not a setting"
                continue
            assert field in model.model_fields, f"{name}: {key} names no field of settings.{section}"
        for k in list(os.environ):
            if k.startswith(("DOCTUNE_", "OPENAI_")):
                monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        s = load_settings()  # raises ConfigError on a bad value
        assert s.validator.executor == "codapi"
        assert s.checkpoint.url and s.checkpoint.url.startswith("postgresql://")


def test_urls_point_at_the_right_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = _env(services["app"])
    codapi = urlsplit(env["DOCTUNE_VALIDATOR__CODAPI_URL"])
    assert codapi.hostname == "codapi"
    assert codapi.port in _container_ports(services["codapi"])
    assert f"EXPOSE {codapi.port}" in (DOCKER / "codapi" / "Dockerfile").read_text()

    pg_env = _env(services["postgres"])
    db = urlsplit(env["DOCTUNE_CHECKPOINT__URL"])
    assert (db.hostname, db.port, db.username) == ("postgres", 5432, pg_env["POSTGRES_USER"])
    assert db.password == pg_env["POSTGRES_PASSWORD"] and db.path == "/" + pg_env["POSTGRES_DB"]

    lg = _env(services["langgraph"])
    server_db = urlsplit(lg["DATABASE_URI"])
    assert server_db.hostname == "postgres" and server_db.path == "/langgraph"
    assert "CREATE DATABASE langgraph" in (DOCKER / "postgres" / "init.sql").read_text()
    assert urlsplit(lg["REDIS_URI"]).hostname == "redis"
    assert 8000 in _container_ports(services["langgraph"])


def test_codapi_sandbox_matches_what_the_validator_sends(compose: dict[str, Any], monkeypatch) -> None:
    from doctune.core.settings import ValidatorSettings
    from doctune.executors.base import ExecRequest
    from doctune.executors.codapi import CodapiExecutor

    env = _env(compose["services"]["app"])
    fields = {k.removeprefix("DOCTUNE_VALIDATOR__").lower(): v for k, v in env.items()
              if k.startswith("DOCTUNE_VALIDATOR__")}
    ex = CodapiExecutor(ValidatorSettings(**fields))
    for mode in ("run", "test", "obj"):
        body = ex.payload(ExecRequest(code="const x = 1;", mode=mode))
        sandbox_dir = DOCKER / "codapi" / "sandboxes" / body["sandbox"]
        commands = json.loads((sandbox_dir / "commands.json").read_text())
        cmd = commands.get(body["command"])
        assert cmd is not None, f"{mode}: the sandbox has no command {body['command']!r}"
        assert set(body["files"]) >= {""}, "the root file goes under the '' key (Codapi names it `entry`)"
        for step in cmd["steps"]:
            box = json.loads((DOCKER / "codapi" / "sandboxes" / step["box"] / "box.json").read_text())
            assert box["image"] == compose["services"]["zig-box"]["image"], "compose builds the image the box runs"
        assert cmd["steps"][0]["command"][-1] == cmd["entry"], "the compile step builds the entry file"


def test_dockerfiles_install_what_the_project_defines() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(project["project"]["optional-dependencies"])
    package_dirs = set(project["tool"]["setuptools"]["package-dir"].values())
    for name, must, must_not in [("Dockerfile", set(), {"gpu"}), ("Dockerfile.gpu", {"gpu"}, set())]:
        text = (DOCKER / name).read_text()
        installed = set()
        for m in re.finditer(r"pip install '\.\[(?P<extras>[^\]]+)\]'", text):
            installed |= set(m.group("extras").split(","))
        assert installed, f"{name} does not install the project with extras"
        assert installed <= extras, f"{name} installs unknown extras {installed - extras}"
        assert must <= installed and not (must_not & installed), (name, installed)
        copied = set(re.findall(r"^COPY (\w+)/ \1/$", text, re.M))
        assert package_dirs <= copied, f"{name} does not copy {package_dirs - copied}"
        entry = re.search(r'^ENTRYPOINT \["(\w+)"\]', text, re.M)
        assert entry and entry.group(1) in project["project"]["scripts"]
        assert "torch==2.13.0" in text  # the pinned torch (an unpinned one pulls GBs of CUDA)
        ignore = (DOCKER / f"{name}.dockerignore").read_text()
        assert "**/.venv" in ignore and "**/.git" in ignore


def test_langgraph_image_serves_the_graph_of_langgraph_json() -> None:
    graphs = json.loads((ROOT / "langgraph.json").read_text())["graphs"]
    text = (DOCKER / "Dockerfile.langgraph").read_text()
    m = re.search(r"^ENV LANGSERVE_GRAPHS='(?P<g>[^']+)'", text, re.M)
    assert m and json.loads(m.group("g")) == graphs
    module, _, attr = graphs["doctune"].partition(":")
    import importlib

    factory = getattr(importlib.import_module(module), attr)
    graph = factory()
    assert graph.checkpointer is None, "the server brings its own checkpointer"
    assert {"split", "section", "curate", "export"} <= set(graph.nodes)
