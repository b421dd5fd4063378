"""Errors a user can act on. The CLI prints them as one line and exits non-zero (no traceback)."""


class DoctuneError(Exception):
    """Base class: the message is shown to the user as is."""


class InputError(DoctuneError):
    """A document or data file the user gave us cannot be used (missing, binary, empty, no headings...)."""


class ConfigError(DoctuneError):
    """A setting is invalid; the message names the field and the fix."""


class ToolchainError(DoctuneError):
    """The Zig toolchain or the sandbox is missing or unusable."""


class EndpointError(DoctuneError):
    """An LLM / Codapi endpoint is unreachable or refused us (bad key, 4xx)."""
