"""The control API of bot protocol v1 over aiohttp.web (docs/bot-protocol.md).

The join path is kept short on purpose: the operator opens its connection while
the Pod is staged and writes the join request on it at the join instant, so
between the request's arrival and the answer there is only a token comparison,
a small JSON parse and a synchronous state transition. The bot's actual join
runs in a task the agent starts; the answer does not wait for it.

Idle connections are kept for hours (``keepalive_timeout``) because the
operator's pre-opened connection may sit idle for the whole staging lead.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from typing import Any, Final, Protocol

from aiohttp import web

from scheduledbot import protocol as p
from scheduledbot.agent.state import StateHolder
from scheduledbot.protocol import JoinRequest, StateDoc
from scheduledbot.timestamps import parse_epoch

logger = logging.getLogger(__name__)

#: Longer than any staging lead, so the operator's pre-opened connection survives it.
KEEPALIVE_TIMEOUT_SECONDS: Final = 4 * 3600.0
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


class ControlServer:
    """Serves the control API for ``controls`` on ``host:port`` (port 0: any free port)."""

    def __init__(self, controls: Controls, *, token: str, host: str, port: int) -> None:
        if not token:
            raise ValueError("the control API needs a non-empty token")
        self._controls = controls
        self._token = token.encode()
        self._host = host
        self._port = port
        app = web.Application()
        app.router.add_get(p.READY_PATH, self._ready)
        app.router.add_post(p.JOIN_PATH, self._join)
        app.router.add_post(p.LEAVE_PATH, self._leave)
        app.router.add_post(p.SCHEDULE_PATH, self._schedule)
        app.router.add_get(p.STATE_PATH, self._state)
        self._runner = web.AppRunner(
            app,
            keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS,
            shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
            access_log=_ACCESS_LOG,
            handle_signals=False,  # the agent handles SIGTERM: it must leave the meeting first
        )

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        logger.info("Serving the bot control API %s on %s:%d.", p.PROTOCOL_VERSION, self._host, self.port)

    async def stop(self) -> None:
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
            join_at = parse_epoch(body["joinAt"])
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
        return await request.json()
    except json.JSONDecodeError:
        raise ValueError("the body is not valid JSON") from None


def _unauthorized() -> web.Response:
    return web.json_response(
        {"error": "missing or wrong bearer token"},
        status=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)
