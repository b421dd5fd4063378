"""Prompt templates: Jinja2 ``*.j2`` files shipped as package data, rendered with ``StrictUndefined``.

``render(name, **vars)`` renders one template (a missing variable is an error, not an empty string);
``template_hash(name)`` is the hash of its source, recorded with every pair so a dataset says which prompt
version made it. Each template's header comment lists its variables. Jinja2 (not ``str.format``) because Zig
code is full of ``{}``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import jinja2

from doctune.core.errors import ConfigError
from doctune.core.schemas import sha256


def _name(name: str) -> str:
    return name if name.endswith(".j2") else f"{name}.j2"


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_load),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # plain text for an LLM, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _load(name: str) -> str:
    return source(name)


@cache
def source(name: str) -> str:
    """The template's text, read from the installed package."""
    path = resources.files(__name__) / _name(name)
    if not path.is_file():
        raise ConfigError(f"prompt template not found: {_name(name)} (have: {', '.join(names())})")
    return path.read_text(encoding="utf-8")


def names() -> list[str]:
    """All shipped template names (without .j2)."""
    return sorted(p.name[:-3] for p in resources.files(__name__).iterdir() if p.name.endswith(".j2"))


def render(name: str, /, **variables: object) -> str:
    """Render template ``name`` (with or without .j2); every variable it uses must be given."""
    try:
        return _env().get_template(_name(name)).render(**variables).strip() + "\n"
    except jinja2.UndefinedError as e:
        raise ConfigError(f"prompt {_name(name)}: {e.message} (pass it to render())") from None


def template_hash(*names_: str) -> str:
    """Content hash of one or more templates (16 hex chars); changes whenever a template's text changes."""
    return sha256("\0".join(source(n) for n in names_))
