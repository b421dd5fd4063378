"""Evaluation task sets shipped with doctune (JSONL package data)."""
