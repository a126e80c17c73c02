"""The control API of bot protocol v1 over aiohttp.web (docs/bot-protocol.md).

The join path is kept short on purpose: the operator opens its connection while
the Pod is staged and writes the join request on it at the join instant, so
between the request's arrival and the answer there is only a token comparison,
a small JSON parse and a synchronous state transition. The bot's actual join
runs in a task the agent starts; the answer does not wait for it.

Limits
======
The port is reachable by whatever the cluster's network lets through (the shipped
NetworkPolicy: the operator only), so the server bounds what a caller can hold:

- request heads: a line at most `MAX_HEADER_LINE` bytes, at most `MAX_HEADERS`
  headers; bodies at most `MAX_BODY_BYTES`, each read within `READ_TIMEOUT_SECONDS`;
- connections: at most `MAX_CONNECTIONS` at once; one more is closed as it is
  accepted, so a flood cannot hold the bot's memory or file descriptors;
- idle connections: kept until the join deadline (`idle_timeout_for`), because
  the operator opens its join connection while the Pod is staged and writes on it
  only at joinAt; then for `MIN_IDLE_SECONDS`. Not four hours.

`/v1/schedule` reads its time with the operator's own `joinAt` parser, so the bot
accepts exactly the times a ScheduledBot may hold.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
from typing import Any, Final, Protocol

from aiohttp import web

from scheduledbot import protocol as p
from scheduledbot.agent.state import StateHolder
from scheduledbot.protocol import JoinRequest, StateDoc
from scheduledbot.timestamps import JoinAtSyntaxError, parse_join_at

logger = logging.getLogger(__name__)

#: Idle connections are kept at least this long; until the join deadline when that is later.
MIN_IDLE_SECONDS: Final = 120.0
MAX_CONNECTIONS: Final = 32
MAX_HEADER_LINE: Final = 8190
MAX_HEADERS: Final = 32
#: The largest request body: a join request is a few hundred bytes.
MAX_BODY_BYTES: Final = 64 * 1024
READ_TIMEOUT_SECONDS: Final = 10.0
#: How long shutdown waits for in-flight requests; long-polls are released at
#: once (StateHolder.close), so this only bounds a stuck handler.
SHUTDOWN_TIMEOUT_SECONDS: Final = 2.0
#: Long-poll requests would otherwise flood the log; transitions are logged instead.
_ACCESS_LOG: Final = None


class Controls(Protocol):
    """What the server needs from the agent (the agent's runtime implements it)."""

    @property
    def state(self) -> StateHolder: ...

    @property
    def ready(self) -> bool: ...

    def request_join(self, request: JoinRequest) -> StateDoc: ...

    def request_leave(self, reason: str) -> StateDoc: ...

    def request_schedule(self, join_at: float) -> StateDoc: ...

    def served(self, doc: StateDoc) -> None: ...


def idle_timeout_for(*, join_at: float | None, join_deadline: float | None, now: float) -> float:
    """How long an idle connection is kept: through the join deadline (the operator's
    join connection waits for joinAt), and never less than `MIN_IDLE_SECONDS`."""
    if join_at is None:
        return MIN_IDLE_SECONDS
    until = join_at + (join_deadline or 0.0) - now
    return max(MIN_IDLE_SECONDS, until + MIN_IDLE_SECONDS)


class ControlServer:
    """Serves the control API for ``controls`` on ``host:port`` (port 0: any free port)."""

    def __init__(
        self, controls: Controls, *, token: str, host: str, port: int, idle_timeout: float = MIN_IDLE_SECONDS
    ) -> None:
        if not token:
            raise ValueError("the control API needs a non-empty token")
        self._controls = controls
        self._token = token.encode()
        self._host = host
        self._port = port
        self._listener: asyncio.Server | None = None
        #: Connections closed as they were accepted because `MAX_CONNECTIONS` were open.
        self.refused = 0
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get(p.READY_PATH, self._ready)
        app.router.add_post(p.JOIN_PATH, self._join)
        app.router.add_post(p.LEAVE_PATH, self._leave)
        app.router.add_post(p.SCHEDULE_PATH, self._schedule)
        app.router.add_get(p.STATE_PATH, self._state)
        self._runner = web.AppRunner(
            app,
            keepalive_timeout=idle_timeout,
            shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
            access_log=_ACCESS_LOG,
            handle_signals=False,  # the agent handles SIGTERM: it must leave the meeting first
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
            max_headers=MAX_HEADERS,
        )

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._listener is not None, "not started"
        return int(self._listener.sockets[0].getsockname()[1])

    async def start(self) -> None:
        await self._runner.setup()
        server = self._runner.server
        assert server is not None

        def accept() -> asyncio.BaseProtocol:
            # aiohttp's sites have no connection limit: this factory is its own site with one.
            if len(server.connections) >= MAX_CONNECTIONS:
                self.refused += 1
                return _Refused()
            return server()

        self._listener = await asyncio.get_running_loop().create_server(accept, self._host, self._port)
        logger.info("Serving the bot control API %s on %s:%d.", p.PROTOCOL_VERSION, self._host, self.port)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        await self._runner.cleanup()

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # compare_digest: the token check must not leak the token through timing.
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    def _answer(self, doc: StateDoc) -> web.Response:
        self._controls.served(doc)
        return web.json_response(doc.to_json())

    async def _ready(self, request: web.Request) -> web.Response:
        ready = self._controls.ready
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _join(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _unauthorized()
        try:
            join = JoinRequest.from_json(await _json_body(request))
            doc = self._controls.request_join(join)
        except ValueError as exc:
            return _bad_request(str(exc))
        return self._answer(doc)

    async def _leave(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _unauthorized()
        try:
            body = await _json_body(request) if request.can_read_body else {}
            if not isinstance(body, dict):
                raise ValueError("the leave body must be a JSON object")
            reason = body.get("reason") or p.REASON_LEAVE_REQUESTED
            if not isinstance(reason, str):
                raise ValueError("reason must be a string")
        except ValueError as exc:
            return _bad_request(str(exc))
        return self._answer(self._controls.request_leave(reason))

    async def _schedule(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _unauthorized()
        try:
            body = await _json_body(request)
            if not isinstance(body, dict) or not isinstance(body.get("joinAt"), str):
                raise ValueError("the body must be a JSON object with joinAt (RFC 3339 with an offset)")
            # The operator's own language: a time it would not send is refused, in its words.
            join_at = parse_join_at(body["joinAt"]).timestamp()
        except JoinAtSyntaxError as exc:
            return _bad_request(f"joinAt: {exc}")
        except ValueError as exc:
            return _bad_request(str(exc))
        return self._answer(self._controls.request_schedule(join_at))

    async def _state(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _unauthorized()
        try:
            after = int(request.query.get("after", "0"))
            timeout = float(request.query.get("timeout", p.DEFAULT_LONG_POLL_SECONDS))
            if after < 0 or not math.isfinite(timeout) or timeout < 0:
                raise ValueError
        except ValueError:
            return _bad_request("after must be a non-negative integer and timeout a non-negative number")
        doc = await self._controls.state.wait_after(after, min(timeout, p.MAX_LONG_POLL_SECONDS))
        return self._answer(doc)


async def _json_body(request: web.Request) -> Any:
    try:
        text = await asyncio.wait_for(request.text(), timeout=READ_TIMEOUT_SECONDS)
        return json.loads(text)
    except TimeoutError:
        raise ValueError(f"the body did not arrive within {READ_TIMEOUT_SECONDS:g} s") from None
    except (json.JSONDecodeError, RecursionError):
        raise ValueError("the body is not valid JSON") from None


class _Refused(asyncio.Protocol):
    """A connection over the limit: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def _unauthorized() -> web.Response:
    return web.json_response(
        {"error": "missing or wrong bearer token"},
        status=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)
