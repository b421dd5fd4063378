"""Prompt templates (Jinja2 `*.j2` files, package data), rendered with StrictUndefined."""
