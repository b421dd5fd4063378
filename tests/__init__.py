"""doctune test suite (a package so `tests.fakes` is importable from tests and as `python -m tests.fakes...`)."""
