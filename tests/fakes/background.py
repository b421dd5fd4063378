"""What the threaded fake servers share: a stdlib ``ThreadingHTTPServer`` served from a daemon thread, started and
stopped by ``start``/``stop`` or as a context manager."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class _Server(ThreadingHTTPServer):
    # Real servers listen with a deep backlog (uvicorn: 2048). socketserver's default of 5 drops connections that
    # arrive in a burst (16 clients opening at once) until the kernel retries them a second later.
    request_queue_size = 1024
    daemon_threads = True


class BackgroundHTTPServer:
    """Base of FakeOpenAI and FakeLangSmith. Subclasses call ``_bind`` in ``__init__``."""

    thread_name = "fake-server"

    def _bind(self, host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> None:
        self._httpd = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        # Short poll interval: shutdown() waits for the next poll, and tests start many servers.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def _before_stop(self) -> None:
        """Hook: release handlers that would otherwise keep ``shutdown`` waiting."""

    def stop(self) -> None:
        self._before_stop()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
