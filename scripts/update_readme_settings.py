"""Regenerate README's settings table from doctune.core.settings (run after adding a setting)."""

from pathlib import Path

from doctune.core.settings_doc import settings_table

START, END = "<!-- settings:start -->", "<!-- settings:end -->"
readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text(encoding="utf-8")
head, rest = text.split(START, 1)
_, tail = rest.split(END, 1)
readme.write_text(f"{head}{START}\n{settings_table()}\n{END}{tail}", encoding="utf-8")
print(f"updated {readme}")
