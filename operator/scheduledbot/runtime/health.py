"""`/healthz` on a thread of its own, saying whether the operator's event loop still runs.

Why not kopf's liveness endpoint
================================
kopf serves its endpoint on the operator's event loop: while the loop is busy (a
thousand bots joining, a start-up listing, a bug that keeps it from yielding), a
probe waits with everything else, and an answer that would have said "stuck" never
comes at all. Here a small HTTP server on its own thread answers at once, and what
it answers is the loop's own sign of life: each probe posts a no-op callback to the
loop (`call_soon_threadsafe`); the answer is 503 when a previous one has waited
`stall_seconds` or more without running, 200 otherwise. Nothing runs between
probes: no heartbeat timer wakes the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

log = logging.getLogger(__name__)

#: A loop that has not run a posted callback for this long is stuck, not busy: the
#: longest legitimate stretch without a yield (a join batch, a start-up listing) is
#: well under a second.
STALL_SECONDS: Final = 10.0
PATH: Final = "/healthz"


class LoopHealth:
    """The event loop's sign of life, as probes find it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, stall_seconds: float = STALL_SECONDS) -> None:
        self._loop = loop
        self._stall = stall_seconds
        self._lock = threading.Lock()
        #: When the callback now waiting to run was posted (monotonic), if one is.
        self._posted: float | None = None
        self._lag: float | None = None

    def verdict(self) -> tuple[bool, dict[str, Any]]:
        """Healthy or not, with the reason; never waits for the loop."""
        now = time.monotonic()
        with self._lock:
            posted = self._posted
            if posted is not None and now - posted >= self._stall:
                return False, {"loop": f"no callback has run for {now - posted:.1f} s"}
            if posted is None:
                try:
                    self._loop.call_soon_threadsafe(self._ran, now)
                except RuntimeError:  # the loop is closed: the operator is stopping
                    return False, {"loop": "closed"}
                self._posted = now
        return True, {"loop": "ok", "lagSeconds": self._lag}

    def _ran(self, posted: float) -> None:
        with self._lock:
            self._lag = time.monotonic() - posted
            self._posted = None


class HealthServer:
    """Serves `LoopHealth` at /healthz from a daemon thread."""

    def __init__(self, health: LoopHealth, *, host: str, port: int) -> None:
        handler = _handler(health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="healthz", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(health: LoopHealth) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != PATH:
                self.send_error(404)
                return
            ok, body = health.verdict()
            payload = json.dumps(body).encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("healthz: " + format, *args)

    return Handler
