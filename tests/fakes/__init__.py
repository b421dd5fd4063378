"""Test doubles at process boundaries: a local OpenAI-compatible HTTP server (openai_server)."""
