"""Reliability suite: crash safety, LLM and executor faults, hostile code, bad inputs, secrets (issue 7)."""
