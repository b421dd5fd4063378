"""Code executors: run one Zig compile/run/test request somewhere (local sandbox, Codapi server).

`get_executor(settings.validator)` returns the configured one. Agents talk to the `Executor` interface only.
"""

from doctune.executors.base import ExecOptions, ExecRequest, ExecResult, Executor, get_executor

__all__ = ["ExecOptions", "ExecRequest", "ExecResult", "Executor", "get_executor"]
