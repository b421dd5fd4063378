"""A minimal OpenAI-compatible chat server for one small local model (what `doctune serve-llm` runs).

``transformers serve`` ignores ``response_format``, and a 135M model left to write JSON on its own writes prose:
nothing it answers parses. This server honours ``response_format`` ``json_schema`` by shaping the answer with
the schema (``doctune.trainer.guided``), answers one request at a time (a CPU model gains nothing from
concurrency), and uses a fixed number of torch threads so that it does not fight the rest of the machine.

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (non-streaming; ``max_tokens`` /
``max_completion_tokens``, ``temperature``, ``response_format``). Run: ``python -m doctune.app.llm_server --model-dir
DIR --port 8000 --threads 1``.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from pathlib import Path
from typing import Any


def _schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema") or None
    return None


def make_app(model_dir: Path, *, threads: int, device: str = "cpu", max_tokens_cap: int = 1024) -> Any:
    from fastapi import FastAPI, HTTPException

    from doctune.trainer.guided import LocalChatModel

    name = model_dir.name
    llm = LocalChatModel(model_dir, threads=threads, device=device)
    lock = threading.Lock()  # one generation at a time
    app = FastAPI(title=f"doctune serve-llm ({name})")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "doctune"}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict[str, Any]) -> dict[str, Any]:
        if body.get("stream"):
            raise HTTPException(400, "streaming is not supported by doctune serve-llm")
        if body.get("model") not in (None, name):
            raise HTTPException(404, f"model {body.get('model')!r} not served here (only {name!r})")
        messages = [{"role": m["role"], "content": _text(m.get("content"))} for m in body.get("messages", [])]
        if not messages:
            raise HTTPException(400, "messages is empty")
        limit = int(body.get("max_completion_tokens") or body.get("max_tokens") or max_tokens_cap)
        with lock:
            ans = llm.chat(messages, max_tokens=min(limit, max_tokens_cap),
                           temperature=float(body.get("temperature") or 0.0), schema=_schema_of(body))
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": name,
            "choices": [{"index": 0, "finish_reason": ans.finish_reason,
                         "message": {"role": "assistant", "content": ans.content}}],
            "usage": {"prompt_tokens": ans.prompt_tokens, "completion_tokens": ans.completion_tokens,
                      "total_tokens": ans.prompt_tokens + ans.completion_tokens},
        }

    return app


def _text(content: Any) -> str:
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m doctune.app.llm_server", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-tokens-cap", type=int, default=1024)
    args = ap.parse_args(argv)
    import uvicorn

    app = make_app(args.model_dir, threads=args.threads, device=args.device, max_tokens_cap=args.max_tokens_cap)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
