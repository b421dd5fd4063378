"""A run's record (`DIR/run.json`): the settings it started with and the history of its attempts.

Defines ``record_settings`` (the settings as they are written: secrets masked, the endpoint and the generator
resolved, so a later shell's environment cannot change what a retry talks to), ``settings_of_record`` (the
settings a resume or a retry uses: the last attempt's, plus explicit changes; keys come from the environment),
``parse_changes`` (``key=value`` strings → nested dict), ``begin_attempt`` / ``end_attempt`` (the record with an
attempt added / ended) and ``load_record`` / ``save_record`` (run.json I/O). The first attempt's settings stay in
``settings`` for ever; every later start, resume or retry appends to ``attempts`` and never rewrites an earlier
entry. ``doctune.graph.lifecycle`` saves the record both to run.json and to the run's checkpoint database (the store's
``("doctune", "runs")`` namespace), so a run on Postgres can be resumed where no run.json exists.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from doctune.core.errors import ConfigError, InputError
from doctune.core.settings import Settings, _format_validation_error

RUN_FILE = "run.json"
MASK = "**********"


def _mask_url(url: str | None) -> str | None:
    """A URL with its password masked (a Postgres URL may carry one)."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def record_settings(settings: Settings) -> dict[str, Any]:
    """The settings as the record keeps them: masked secrets, the resolved endpoint and generator kind."""
    from doctune.agents.generator import generator_kind

    data = settings.public_dict()
    data["generator"]["kind"] = generator_kind(settings)
    data["llm"]["base_url"] = _mask_url(settings.llm.base_url)
    data["checkpoint"]["url"] = _mask_url(settings.checkpoint.url)
    return data


def who_writes(data: dict[str, Any]) -> dict[str, Any]:
    """Generator and model of a recorded settings dict (model only for the LLM generator)."""
    kind = data["generator"]["kind"]
    return {"generator": kind, "model": data["llm"]["model"] if kind == "llm" else None}


def parse_changes(items: list[str]) -> dict[str, Any]:
    """``["llm.model=x", "generator.max_repairs=1"]`` → ``{"llm": {"model": "x"}, ...}`` (values as JSON when
    they parse, else as strings). Raises InputError naming the bad item."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        path = [k for k in key.strip().split(".") if k]
        if not sep or len(path) < 2:
            raise InputError(f"--set {item!r}: expected section.key=value, e.g. --set llm.model=qwen2.5")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in changes.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def settings_of_record(info: dict[str, Any], changes: dict[str, Any] | None = None,
                       checkpoint_url: str | None = None) -> Settings:
    """The settings of the run's last attempt with ``changes`` applied. Secrets are not in the record: the API key
    comes from the environment now (llm.api_key / $OPENAI_API_KEY), a masked checkpoint URL from ``checkpoint_url``."""
    attempts = info.get("attempts") or []
    data = _merge(attempts[-1]["settings"] if attempts else info["settings"], changes or {})
    data["llm"].pop("api_key", None)
    if checkpoint_url:
        data["checkpoint"]["url"] = checkpoint_url
    elif MASK in (data["checkpoint"].get("url") or ""):
        raise ConfigError("this run's checkpoints are in a database whose URL is masked in run.json: "
                          "set DOCTUNE_CHECKPOINT__URL (or checkpoint.url in --config)")
    if MASK in (data["llm"].get("base_url") or ""):
        raise ConfigError("the run's llm.base_url carried a password (masked in run.json): give it again with "
                          "--set llm.base_url=URL")
    from pydantic import ValidationError

    try:
        return Settings(**data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e)) from None


def load_record(run_dir: Path) -> dict[str, Any]:
    """The run's run.json (run id, docs, max_sections, settings, attempts)."""
    f = run_dir / RUN_FILE
    if not run_dir.exists():
        raise InputError(f"{run_dir} does not exist (a run's output directory, from `doctune run … --out DIR`)")
    if not f.is_file():
        raise InputError(f"{run_dir} is not a doctune run directory (no run.json; start it with `doctune run`)")
    try:
        info = json.loads(f.read_text(encoding="utf-8"))
        info["run_id"], info["docs"], info["settings"]  # noqa: B018 - all must be there
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{f} is damaged ({type(e).__name__}: {e}); re-run `doctune run` with the same inputs") from None
    return info


def _write(run_dir: Path, info: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".run-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, default=str)
    os.chmod(tmp, 0o644)
    os.replace(tmp, run_dir / RUN_FILE)


def begin_attempt(info: dict[str, Any] | None, run_id: str, docs: list[str], max_sections: int | None,
                  settings: Settings, command: str, changes: dict[str, Any] | None = None,
                  tokens_superseded: dict[str, int] | None = None,
                  tokens_preflight: dict[str, int] | None = None) -> dict[str, Any]:
    """The record with an attempt appended (command run/resume/retry, its settings, generator and model, the
    tokens of preflight's endpoint probe); no record, or one of another run id, starts a fresh record whose
    ``settings`` are these. Pure: the caller saves it (run.json and the checkpoint database)."""
    recorded = record_settings(settings)
    info = copy.deepcopy(info) if info and info.get("run_id") == run_id else None
    if info is None:
        info = {"run_id": run_id, "docs": docs, "max_sections": max_sections, "settings": recorded,
                **who_writes(recorded), "attempts": []}
    info.setdefault("attempts", [])
    attempt = {"n": len(info["attempts"]) + 1, "command": command, "started_at": _now(), "outcome": "running",
               **who_writes(recorded), "changes": changes or {}, "settings": recorded,
               "tokens_superseded": tokens_superseded or {"input": 0, "output": 0},
               "tokens_preflight": {k: (tokens_preflight or {}).get(k, 0) for k in ("input", "output")}}
    info["attempts"].append(attempt)
    return info


def end_attempt(info: dict[str, Any], outcome: str) -> dict[str, Any]:
    """The record with its last attempt's ending: completed | completed_with_failures | interrupted |
    stopped: <why>. Pure, like ``begin_attempt``."""
    info = copy.deepcopy(info)
    if info.get("attempts"):
        info["attempts"][-1].update(outcome=outcome, finished_at=_now())
    return info


def save_record(run_dir: Path, info: dict[str, Any]) -> None:
    """Write run.json (atomically: a temp file renamed over it)."""
    _write(run_dir, info)


def superseded_tokens(info: dict[str, Any]) -> dict[str, int]:
    """Tokens the graph state does not hold: spent by section results that a retry replaced, and by each
    attempt's preflight probe of the endpoint."""
    total = {"input": 0, "output": 0}
    for a in info.get("attempts") or []:
        for k in total:
            total[k] += (a.get("tokens_superseded") or {}).get(k, 0) + (a.get("tokens_preflight") or {}).get(k, 0)
    return total


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
