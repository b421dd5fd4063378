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


class AccessError(EndpointError):
    """The endpoint refused us for good (401 key, 403 permission, 404 model): no section can succeed, so the whole
    run stops at once instead of asking again for every section."""


class Interrupted(DoctuneError):
    """The run was stopped (Ctrl-C / SIGINT, SIGTERM); its checkpoints are kept and it can be resumed."""
