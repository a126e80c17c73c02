"""A local webhook receiver: the sink that the operator's notifications go to in tests and demos.

It verifies every delivery's Standard Webhooks signature with the `standardwebhooks`
library (as a real receiver would), records each attempt, and answers as a test
tells it to: 200 by default, or a scripted series (500 twice, a 429 with
Retry-After, a 410 Gone, or no answer at all).

Run it::

    python -m localcluster.receiver --host 127.0.0.1 --port 0 [--key-file F]

It prints its base URL (``http://127.0.0.1:<port>``) as the first line on stdout,
and, when it made up a signing key because none was given, the key
(``whsec_...``) as the second. The key may also come from the environment
variable ``LOCALCLUSTER_RECEIVER_KEY``. It stops on SIGTERM/SIGINT. From pytest,
use :class:`WebhookReceiver` in-process or :class:`WebhookReceiverProcess` as a
subprocess.

Sink
====

``POST /hooks/<anything>``
    A delivery. A missing or wrong signature (or a timestamp more than five
    minutes off) gets 401 and is recorded with ``"verified": false``. Otherwise
    the next scripted answer is given (200 when the script is empty).

Admin API
=========

``POST /admin/script`` body ``{"answers": [{"status": 500}, {"status": 429, "retryAfter": "2"}, {"hang": true}]}``
    Append answers for the next verified deliveries, one each.
``GET /admin/attempts``
    ``{"attempts": [...]}``: every delivery attempt in arrival order, each
    ``{"id", "timestamp", "signature", "body", "verified", "status", "path", "receivedAt", "event"}``
    (``body``: as received, for a test to verify on its own; ``event``: the body as JSON, or null).
``GET /admin/deliveries?count=<n>&timeout=<s>``
    ``{"deliveries": [...]}``: the attempts answered 2xx; with ``count``, waits
    (at most ``timeout`` seconds, default 30, capped at 60) until there are
    that many.
``POST /admin/reset``
    Forget attempts and the script.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import pathlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from localcluster.httpserver import AppServer, ServerProcess, long_poll, serve

KEY_VARIABLE: Final = "LOCALCLUSTER_RECEIVER_KEY"
MAX_WAIT_SECONDS: Final = 60.0
#: A hanging answer is released at the latest after this, or when the receiver stops.
MAX_HANG_SECONDS: Final = 300.0
_MAX_BODY: Final = 1024 * 1024


def new_key() -> str:
    """A fresh Standard Webhooks signing key: whsec_ and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True, kw_only=True)
class Answer:
    """How to answer one verified delivery."""

    status: int = 200
    retry_after: str | None = None
    #: Never answer (until the receiver stops): the client's timeout is what ends it.
    hang: bool = False

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Answer:
        status, retry_after, hang = doc.get("status", 200), doc.get("retryAfter"), doc.get("hang", False)
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        if retry_after is not None and not isinstance(retry_after, str):
            raise ValueError("retryAfter must be a string (seconds or an HTTP date)")
        if not isinstance(hang, bool):
            raise ValueError("hang must be a boolean")
        return cls(status=status, retry_after=retry_after, hang=hang)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "retryAfter": self.retry_after, "hang": self.hang}


class WebhookReceiver(AppServer):
    """The receiver, in-process: ``async with WebhookReceiver() as receiver: receiver.url("bot")``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        key: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key or new_key()
        self._webhook = Webhook(self.key)
        self._clock = clock
        self._script: list[Answer] = []
        self._attempts: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post("/hooks/{tail:.*}", self._hook)
        app.router.add_post("/admin/script", self._admin_script)
        app.router.add_get("/admin/attempts", self._admin_attempts)
        app.router.add_get("/admin/deliveries", self._admin_deliveries)
        app.router.add_post("/admin/reset", self._admin_reset)
        super().__init__(web.AppRunner(app, access_log=None, shutdown_timeout=1.0), host=host, port=port)

    async def stop(self) -> None:
        self._closing.set()  # hanging answers and waiting readers return now
        self._wake()
        await super().stop()

    def url(self, name: str = "bots") -> str:
        """A sink URL on this receiver."""
        return f"{self.base_url}/hooks/{name}"

    # -- operations (the admin API and tests) ---------------------------------------------------

    def script(self, *answers: Answer) -> None:
        """Answer the next verified deliveries so, one each; then 200 again."""
        self._script.extend(answers)

    @property
    def attempts(self) -> list[dict[str, Any]]:
        return list(self._attempts)

    @property
    def deliveries(self) -> list[dict[str, Any]]:
        """The attempts answered 2xx (a repeated id shows up again: count them to check "once")."""
        return [attempt for attempt in self._attempts if 200 <= attempt["status"] < 300]

    async def wait_for(self, count: int, *, timeout: float) -> list[dict[str, Any]]:
        """The deliveries, once there are `count` of them or `timeout` seconds have passed."""
        await self._wait(lambda: len(self.deliveries) >= count, timeout)
        return self.deliveries

    async def wait_for_attempts(self, count: int, *, timeout: float) -> list[dict[str, Any]]:
        """The attempts (whatever their answer), once there are `count` of them or `timeout` seconds have passed."""
        await self._wait(lambda: len(self._attempts) >= count, timeout)
        return self.attempts

    async def _wait(self, done: Callable[[], bool], timeout: float) -> None:
        await long_poll(lambda: done() or self._closing.is_set(), lambda: self._changed, timeout=timeout)

    def reset(self) -> None:
        self._script.clear()
        self._attempts.clear()
        self._wake()

    # -- handlers ---------------------------------------------------------------------------------

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        received = self._clock()
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            self._webhook.verify(body, headers, json_parse=False)
            verified = True
        except (WebhookVerificationError, ValueError):  # ValueError: a malformed signature header
            verified = False
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        answer = Answer(status=401) if not verified else (self._script.pop(0) if self._script else Answer())
        attempt = {
            "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "signature": headers.get("webhook-signature"),
            "body": body.decode("utf-8", errors="replace"),
            "verified": verified,
            "status": answer.status,
            "hang": answer.hang,
            "path": request.path,
            "contentType": headers.get("content-type"),
            "receivedAt": _rfc3339(received),
            "event": event,
        }
        self._attempts.append(attempt)
        self._wake()
        if answer.hang:
            try:
                await asyncio.wait_for(self._closing.wait(), timeout=MAX_HANG_SECONDS)
            except TimeoutError:
                pass
        response_headers = {"Retry-After": answer.retry_after} if answer.retry_after is not None else {}
        doc = {"ok": 200 <= answer.status < 300} if verified else {"error": "signature not verified"}
        return web.json_response(doc, status=answer.status, headers=response_headers)

    async def _admin_script(self, request: web.Request) -> web.Response:
        try:
            doc = await request.json()
            answers = [Answer.from_json(item) for item in doc["answers"]]
        except (ValueError, KeyError, TypeError, AttributeError) as problem:
            return web.json_response({"error": f"body must be {{'answers': [...]}}: {problem}"}, status=400)
        self.script(*answers)
        return web.json_response({"script": [answer.to_json() for answer in self._script]})

    async def _admin_attempts(self, request: web.Request) -> web.Response:
        return web.json_response({"attempts": self.attempts})

    async def _admin_deliveries(self, request: web.Request) -> web.Response:
        try:
            count = int(request.query.get("count", "0"))
            timeout = min(float(request.query.get("timeout", "30")), MAX_WAIT_SECONDS)
        except ValueError:
            return web.json_response({"error": "count must be an integer and timeout a number"}, status=400)
        return web.json_response({"deliveries": await self.wait_for(count, timeout=max(timeout, 0.0))})

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"attempts": []})

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def _rfc3339(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class WebhookReceiverProcess(ServerProcess):
    """The receiver as a subprocess (``with WebhookReceiverProcess() as receiver: receiver.url("bot")``).

    For tests whose event loop must not host it (the operator runs elsewhere and
    the test blocks). Its key is made here and handed over in the environment.
    """

    module = "localcluster.receiver"
    what = "the webhook receiver"

    def __init__(self, *, host: str = "127.0.0.1", key: str | None = None, startup_timeout: float = 10.0) -> None:
        self.key = key or new_key()
        super().__init__(host=host, startup_timeout=startup_timeout, env={KEY_VARIABLE: self.key})

    def url(self, name: str = "bots") -> str:
        return f"{self.base_url}/hooks/{name}"

    def script(self, *answers: Answer) -> None:
        self.call("POST", "/admin/script", {"answers": [answer.to_json() for answer in answers]})

    def attempts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/admin/attempts")["attempts"]
        return result

    def deliveries(self, *, count: int = 0, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The 2xx-answered deliveries; with `count`, waits up to `timeout` s until there are that many."""
        path = f"/admin/deliveries?count={count}&timeout={timeout:g}"
        result: list[dict[str, Any]] = self.call("GET", path, timeout=timeout + 10)["deliveries"]
        return result

    def reset(self) -> None:
        self.call("POST", "/admin/reset")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m localcluster.receiver", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument(
        "--key-file",
        type=pathlib.Path,
        help=f"file holding the whsec_ signing key (else ${KEY_VARIABLE}, else a new one)",
    )
    args = parser.parse_args(argv)
    given = args.key_file.read_text().strip() if args.key_file else os.environ.get(KEY_VARIABLE) or None
    key = given or new_key()
    # A key made up here is printed after the base URL, for whoever started the receiver.
    made_up = [key] if given is None else []
    asyncio.run(serve(lambda: WebhookReceiver(host=args.host, port=args.port, key=key), also_print=made_up))


if __name__ == "__main__":
    main()
