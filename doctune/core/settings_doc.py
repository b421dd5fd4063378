"""Render the settings reference (README's "Configuration" table) from the settings model itself."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from doctune.core.settings import Settings


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        if getattr(field.default_factory, "__name__", "") in ("<lambda>", "default_cache_dir"):
            return "(computed)"  # machine-dependent, e.g. the CPU count or the home folder
        value = field.get_default(call_default_factory=True)  # calls the (argument-less) factory
    else:
        value = field.default
    if value is None:
        return "unset"
    return f"`{value!r}`".replace("|", "\\|") if not isinstance(value, str) else f'`"{value}"`'


def settings_table() -> str:
    """Markdown table: key, env var, default, description for every leaf setting."""
    rows = ["| setting (TOML `[section] key`) | env var | default | what it does |", "|---|---|---|---|"]
    for section, sfield in Settings.model_fields.items():
        model = sfield.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):  # a top-level setting (cache_dir)
            desc = (sfield.description or "").replace("|", "\\|")
            rows.append(f"| `{section}` | `DOCTUNE_{section.upper()}` | {_default(sfield)} | {desc} |")
            continue
        for key, f in model.model_fields.items():
            env = f"DOCTUNE_{section.upper()}__{key.upper()}"
            desc = (f.description or "").replace("|", "\\|")
            rows.append(f"| `{section}.{key}` | `{env}` | {_default(f)} | {desc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
