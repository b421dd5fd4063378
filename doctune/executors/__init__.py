"""Code executors: run one Zig compile/run/test request somewhere (local sandbox, Codapi server).

`get_executor(settings.validator)` returns the configured one. Agents talk to the `Executor` interface only.
The executors floor runs code and knows nothing of pairs, sections or the graph (it stands on `doctune.core`).
"""

from doctune.core.settings import ValidatorSettings
from doctune.executors.base import ExecOptions, ExecRequest, ExecResult, Executor

__all__ = ["ExecOptions", "ExecRequest", "ExecResult", "Executor", "get_executor"]


def get_executor(settings: ValidatorSettings) -> Executor:
    """The executor the settings ask for."""
    if settings.executor == "codapi":
        from doctune.executors.codapi import CodapiExecutor

        return CodapiExecutor(settings)
    from doctune.executors.local import LocalExecutor

    return LocalExecutor(settings)
