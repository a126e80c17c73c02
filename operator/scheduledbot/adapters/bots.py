"""The bot side: the only code that talks to bot Pods (bot protocol v1).

Two kinds of connection
=======================
- `JoinLine`: one raw TCP connection per staged bot, opened while the bot waits, with
  its join request pre-built. At the join instant the dispatcher only writes bytes
  that are ready, for thousands of bots in one go, straight to each line's socket:
  no HTTP client machinery (pools, header building, one task per request) stands
  between `joinAt` and the socket.
  Measured on this machine before any code: a naive asyncio fan-out of 1,000 HTTP
  requests over open connections arrived at p99 about 190 ms; pre-built writes on
  pre-opened sockets at p99 about 23 ms.
- `BotClient`: an aiohttp session for everything that is not time-critical: the
  long-poll on the bot's state, `leave`, and moving the self-join time.

The token is sent, never logged.

Bots are not trusted
====================
A bot Pod runs code someone else chose, so its answers are read as hostile input:
at most `MAX_ANSWER_BYTES` (the length is checked before reading, and the read
stops there), headers bounded in size and number, a time limit on every call,
the document validated (`StateAnswer`) and its free text escaped and cut
(`api.limits.escaped`) before anything reaches status, Events or a log line. A
reason that is not a CamelCase word (status.reason's own pattern) is not used as
one: the bot's words go into the message instead. An answer that breaks any of
this is `BotUnreachable`, like a bot that does not answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from datetime import datetime
from typing import Any, Final

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from scheduledbot.api.limits import escaped
from scheduledbot.core.model import BotReport
from scheduledbot.protocol import (
    DEFAULT_LONG_POLL_SECONDS,
    JOIN_PATH,
    LEAVE_PATH,
    SCHEDULE_PATH,
    STATE_PATH,
    BotState,
    JoinedBy,
)
from scheduledbot.timestamps import format_time, parse_time

_TIMEOUT: Final = aiohttp.ClientTimeout(total=DEFAULT_LONG_POLL_SECONDS + 10, connect=5)
_SHORT: Final = aiohttp.ClientTimeout(total=10, connect=5)
#: A state document is a few hundred bytes; anything beyond this is not one.
MAX_ANSWER_BYTES: Final = 64 * 1024
#: Header limits of an answer: a line, and how many (aiohttp's own defaults allow 32,768).
MAX_HEADER_LINE: Final = 8190
MAX_HEADERS: Final = 64
#: The bot's message as status, Events and logs show it (status allows 32 KiB; a bot needs a sentence).
MAX_REPORTED_MESSAGE: Final = 1024
#: A bot's reason used as status.reason: a CamelCase word (the CRD's pattern), short.
MAX_REPORTED_REASON: Final = 64
_REASON: Final = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")


class BotUnreachable(Exception):
    """The bot did not answer as the protocol says (connection, status, size or body)."""


class StateAnswer(BaseModel):
    """The state document (bot protocol v1) as a bot sends it; unknown fields are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: StrictInt = Field(default=0, ge=0, le=2**53)
    state: BotState
    since: StrictStr | None = Field(default=None, max_length=64)
    message: StrictStr | None = None
    reason: StrictStr | None = None
    joined_by: JoinedBy | None = Field(default=None, alias="joinedBy")
    exit_code: StrictInt | None = Field(default=None, alias="exitCode", ge=-(2**31), le=2**31)
    join_started_at: StrictStr | None = Field(default=None, alias="joinStartedAt", max_length=64)


def parse_report(body: bytes) -> BotReport:
    """A bot's answer as a `BotReport`, its text made safe; `BotUnreachable` when it is not a state document."""
    if len(body) > MAX_ANSWER_BYTES:
        raise BotUnreachable(f"the answer is over {MAX_ANSWER_BYTES} bytes")
    try:
        doc = StateAnswer.model_validate_json(body)
        since = parse_time(doc.since) if doc.since else None
        started = parse_time(doc.join_started_at) if doc.join_started_at else None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()[:3])
        raise BotUnreachable(f"not a state document: {escaped(problems, limit=300)}") from None
    except ValueError as error:
        raise BotUnreachable(f"since: {escaped(str(error), limit=300)}") from None
    reason, note = doc.reason, ""
    if reason is not None and (len(reason) > MAX_REPORTED_REASON or not _REASON.fullmatch(reason)):
        # Not a reason status.reason (or an Event) would take: keep the words, drop the role.
        note = f"(the bot's reason, not a CamelCase word: {escaped(reason, limit=200)})"
        reason = None
    room = MAX_REPORTED_MESSAGE - len(note) - 1 if note else MAX_REPORTED_MESSAGE
    message = " ".join(part for part in (escaped(doc.message or "", limit=room), note) if part)
    return BotReport(
        version=doc.version,
        state=doc.state,
        since=since,
        message=message,
        reason=reason,
        joined_by=doc.joined_by,
        exit_code=doc.exit_code,
        join_started_at=started,
    )


class JoinLine:
    """A pre-opened connection with its join request ready to write."""

    def __init__(
        self, *, address: str, token: str, request_id: str, meeting_url: str, bot_name: str, join_at: str
    ) -> None:
        self.address = address
        host, _, port = address.rpartition(":")
        self._host, self._port = host, int(port)
        body = json.dumps(
            {"requestId": request_id, "meetingUrl": meeting_url, "botName": bot_name, "joinAt": join_at},
            separators=(",", ":"),
        ).encode()
        self.request = (
            f"POST {JOIN_PATH} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        #: The connection's own socket, written directly at the instant (see `write`).
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: A write found the connection broken: not ready until reopened.
        self._broken = False

    async def open(self) -> None:
        """Connect (again): the socket is ours, the streams around it read the answer."""
        self.close()
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, (self._host, self._port)), timeout=5)
            self._reader, self._writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        self._sock, self._loop, self._broken = sock, loop, False

    @property
    def ready(self) -> bool:
        """Open and not closed by the bot since (a closed one is reopened at the instant)."""
        return (
            not self._broken
            and self._writer is not None
            and self._reader is not None
            and not self._writer.is_closing()
            and not self._reader.at_eof()
        )

    def write(self) -> None:
        """Hand the request to the kernel now, from any thread; synchronous so a batch has no await in it.

        Straight on the socket, not through the stream's transport, which belongs to its
        loop's thread: the batch is dealt out to writer threads (docs/design.md, "The
        batch"). Nothing else ever writes on a join line, so no bytes can interleave. What
        the kernel does not take at once (not seen for a request of a few hundred bytes on
        an idle connection) is queued on the transport by its own loop. A broken connection
        (the bot closed or reset it) raises `OSError` and leaves the line not ready, so
        that it is reopened.
        """
        assert self._sock is not None and self._loop is not None and self._writer is not None
        try:
            sent = self._sock.send(self.request)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._broken = True
            raise
        if sent < len(self.request):
            self._loop.call_soon_threadsafe(self._writer.write, self.request[sent:])

    async def answer(self) -> BotReport:
        """Read the bot's answer to the join, then close the connection.

        The line may be closed meanwhile (disarmed: the bot's state came first by its
        long-poll); what was already received is still read, and the rest is an error.
        """
        reader = self._reader
        assert reader is not None and self._writer is not None
        try:
            # The reader's buffer limit (64 KiB) bounds the head: a longer one is LimitOverrunError.
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            status_line, *lines = head.decode("latin-1").split("\r\n")
            code = int(status_line.split(" ", 2)[1])
            length = 0
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value.strip())
            if not 0 <= length <= MAX_ANSWER_BYTES:
                raise ValueError(f"an answer of {length} bytes (at most {MAX_ANSWER_BYTES})")
            body = await asyncio.wait_for(reader.readexactly(length), timeout=10)
        except (
            TimeoutError,
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            IndexError,
        ) as error:
            raise BotUnreachable(f"no answer to join from {self.address}: {escaped(repr(error), limit=300)}") from None
        finally:
            self.close()
        if code != 200:
            raise BotUnreachable(f"join answered {code} by {self.address}: {body[:200]!r}")
        return parse_report(body)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self._sock = None


class BotClient:
    """Non-urgent calls to bots, over one shared aiohttp session."""

    def __init__(self) -> None:
        # No per-host or total limit: each bot is its own host and the long-polls
        # of hundreds of bots are all open at once by design.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
            max_headers=MAX_HEADERS,
        )

    async def close(self) -> None:
        await self._session.close()

    async def state(self, address: str, token: str, *, after: int) -> BotReport:
        """Long-poll: answers when the bot's version passes `after`, or unchanged after a while."""
        url = f"http://{address}{STATE_PATH}"
        params = {"after": str(after), "timeout": str(int(DEFAULT_LONG_POLL_SECONDS))}
        return await self._call("GET", url, token, params=params, timeout=_TIMEOUT)

    async def leave(self, address: str, token: str, *, reason: str) -> BotReport:
        return await self._call("POST", f"http://{address}{LEAVE_PATH}", token, json={"reason": reason})

    async def move_self_join(self, address: str, token: str, *, join_at: datetime) -> BotReport:
        at = format_time(join_at)
        return await self._call("POST", f"http://{address}{SCHEDULE_PATH}", token, json={"joinAt": at})

    async def _call(
        self, method: str, url: str, token: str, *, timeout: aiohttp.ClientTimeout = _SHORT, **kwargs: Any
    ) -> BotReport:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with self._session.request(method, url, headers=headers, timeout=timeout, **kwargs) as response:
                if response.status != 200:
                    raise BotUnreachable(f"{method} {url} answered {response.status}")
                body = await _bounded(response)
        except (TimeoutError, aiohttp.ClientError, ValueError) as error:
            raise BotUnreachable(f"{method} {url}: {escaped(repr(error), limit=300)}") from None
        return parse_report(body)


async def _bounded(response: aiohttp.ClientResponse) -> bytes:
    """The body, read no further than `MAX_ANSWER_BYTES` (a longer one closes the connection unread)."""
    if response.content_length is not None and response.content_length > MAX_ANSWER_BYTES:
        response.close()
        raise BotUnreachable(f"an answer of {response.content_length} bytes (at most {MAX_ANSWER_BYTES})")
    parts: list[bytes] = []
    size = 0
    while chunk := await response.content.read(MAX_ANSWER_BYTES + 1 - size):
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            response.close()
            raise BotUnreachable(f"an answer over {MAX_ANSWER_BYTES} bytes")
    return b"".join(parts)
