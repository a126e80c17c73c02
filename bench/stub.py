"""The bench's stub bot: ONE process that plays every bench bot Pod's control API.

Run as `python -m bench.stub --port 18181 --count N`; the harness drives it with JSON
lines on stdin and reads one JSON line per command on stdout.

What it does
============
- Listens on 127.0.0.10 upward (the fake kubelet's Pod addresses, lowest free first:
  127.0.0.10..254, then 127.0.1.1..254, ...), one pre-bound listening socket per
  address on a bench-only port (never the real bots' 8181), and binds more
  addresses when told (`bind`), as the harness sees Pods get addresses.
- Serves bot protocol v1 on each address, one bot per address: `GET /v1/ready`
  (always 200), `POST /v1/join` (first join: `ready` -> `joining`, `joinedBy:
  signal`; later joins answer the same document and change nothing), `GET
  /v1/state?after=&timeout=` (long-poll, answered on change or after the timeout),
  `POST /v1/leave` (`leaving` then `ended` at once), `POST /v1/schedule` (200, no-op),
  and `POST /bench/ping` (stamped like a join, changes nothing: bench/floor.py).
  HTTP/1.1 with keep-alive and Content-Length bodies only (what the operator, aiohttp
  and the kubelet's prober send).
- Stamps every request twice, the moment its first bytes are read and where the kernel
  received them. The read stamp is `time.time()`, the first statement of the socket's
  read callback (the `data_received` of this stub: its sockets are served with
  `loop.add_reader` and `recvmsg`, not asyncio transports, to get the second stamp),
  before any parsing. The kernel stamp is SO_TIMESTAMPNS, the time the loopback
  device handed the bytes to the socket: it does not depend on when this one process,
  playing thousands of Pods on a shared 2-core machine, is scheduled to read them.
  Nothing else runs in the read callback: parsing, state changes and answers are
  deferred until arrivals have been quiet for `QUIET` seconds, so that a thousand joins
  arriving together are stamped as they arrive, not after the stub answered the earlier
  ones (a real bot answers only its own join).
- Moves bots on command (`state`): `joined`, `ended`... as a bot reports them, so the
  operator's long-poll sees a whole lifecycle.

What it does not do
===================
It checks no token (any or no `Authorization` header is accepted), has no safety net
(it never joins on its own), no warm-up, no maximum duration and never exits after
`ended`; it knows nothing about the Pod it stands for (the Pod's own process is
`sleep`), only the address the request came to. It is not a conformance test of the
protocol: tests/ do that with the real agent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import struct
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: Kernel receive timestamps (Linux; the socket module does not name it).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
#: Answers wait until no bytes arrived for this long (see the module docstring).
QUIET = 0.003
#: Never defer an answer longer than this, even under a steady stream of requests.
MAX_DEFER = 0.25


def addresses(count: int, start: int = 0) -> Iterator[str]:
    """The fake kubelet's Pod addresses in its allocation order, from the `start`-th."""
    n = 0
    for b in range(256):
        for c in range(256):
            for d in range(10 if (b, c) == (0, 0) else 1, 255):
                if n >= start + count:
                    return
                if n >= start:
                    yield f"127.{b}.{c}.{d}"
                n += 1


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Bot:
    """The protocol state of the one bot behind an address."""

    __slots__ = ("address", "joined_by", "message", "reason", "request_id", "since", "state", "version", "waiters")

    def __init__(self, address: str) -> None:
        self.address = address
        self.waiters: list[Any] = []
        self.reset()

    def reset(self) -> None:
        self.version = 1
        self.state = "ready"
        self.since = time.time()
        self.message = "waiting to join"
        self.reason: str | None = None
        self.joined_by: str | None = None
        self.request_id: str | None = None
        self.wake()

    def move(self, state: str, message: str, reason: str | None = None) -> None:
        self.version += 1
        self.state = state
        self.since = time.time()
        self.message = message
        self.reason = reason
        self.wake()

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter()

    def document(self) -> bytes:
        return json.dumps(
            {
                "protocol": "v1",
                "version": self.version,
                "state": self.state,
                "since": _stamp(self.since),
                "message": self.message,
                "reason": self.reason,
                "joinedBy": self.joined_by,
                "requestId": self.request_id,
                "exitCode": None,
            }
        ).encode()


class Stub:
    def __init__(self, port: int) -> None:
        self.port = port
        self.bots: dict[str, Bot] = {}
        self.servers: dict[str, socket.socket] = {}
        #: Every join that arrived: (address, read stamp, requestId, kernel stamp), in arrival order.
        self.joins: list[tuple[str, float, str | None, float | None]] = []
        self.requests = 0
        self._pending: list[tuple[Connection, float, float | None, bytes]] = []
        self._last_arrival = 0.0
        self._first_pending = 0.0
        self._drain: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    async def bind(self, wanted: list[str]) -> list[str]:
        failed = []
        for address in wanted:
            if address in self.servers:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, self.port))
            except OSError:
                sock.close()
                failed.append(address)
                continue
            # On the listener too: accepted sockets inherit it, and the kernel stamps packets
            # that arrive before the accept (the join may come with the connection).
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.listen(512)
            sock.setblocking(False)
            bot = self.bots.setdefault(address, Bot(address))
            self.loop.add_reader(sock.fileno(), self._accept, sock, bot)
            self.servers[address] = sock
        return failed

    def _accept(self, listener: socket.socket, bot: Bot) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            Connection(self, bot, sock)

    # Deferred processing ---------------------------------------------------------------------

    def arrived(self, connection: Connection, at: float, kernel: float | None, data: bytes) -> None:
        if not self._pending:
            self._first_pending = at
        self._pending.append((connection, at, kernel, data))
        self._last_arrival = at
        if self._drain is None:
            self._drain = self.loop.call_later(QUIET, self._drain_when_quiet)

    def _drain_when_quiet(self) -> None:
        now = time.time()
        quiet_for = now - self._last_arrival
        if quiet_for < QUIET and now - self._first_pending < MAX_DEFER:
            self._drain = self.loop.call_later(QUIET - quiet_for, self._drain_when_quiet)
            return
        self._drain = None
        pending, self._pending = self._pending, []
        for connection, at, kernel, data in pending:
            connection.feed(at, kernel, data)

    # Requests ------------------------------------------------------------------------------

    def handle(
        self, connection: Connection, bot: Bot, at: float, kernel: float | None, method: str, target: str, body: bytes
    ) -> None:
        self.requests += 1
        url = urlsplit(target)
        path = url.path
        if method == "GET" and path == "/v1/ready":
            connection.answer(200, b'{"ready": true}')
        elif method == "POST" and path == "/v1/join":
            request_id = _field(body, "requestId")
            self.joins.append((bot.address, at, request_id, kernel))
            if bot.state == "ready":
                bot.request_id = request_id
                bot.joined_by = "signal"
                bot.move("joining", "joining the meeting")
            connection.answer(200, bot.document())
        elif method == "GET" and path == "/v1/state":
            query = parse_qs(url.query)
            after = int((query.get("after") or ["0"])[0])
            timeout = min(float((query.get("timeout") or ["30"])[0]), 60.0)
            if bot.version > after:
                connection.answer(200, bot.document())
            else:
                connection.hold(bot, timeout)
        elif method == "POST" and path == "/v1/leave":
            if bot.state in ("joining", "waiting_room", "joined", "recording"):
                reason = _field(body, "reason") or "LeaveRequested"
                bot.move("leaving", "leaving the meeting", reason)
                bot.move("ended", "left the meeting", reason)
            elif bot.state == "ready":
                bot.move("ended", "left before joining", _field(body, "reason") or "LeaveRequested")
            connection.answer(200, bot.document())
        elif method == "POST" and path == "/bench/ping":
            # The floor measurement (bench/floor.py): stamped like a join, changes nothing.
            self.joins.append((bot.address, at, _field(body, "requestId"), kernel))
            connection.answer(200, b"{}")
        elif method == "POST" and path == "/v1/schedule":
            connection.answer(200, bot.document())
        else:
            connection.answer(404, b'{"error": "not found"}')

    # Commands from the harness ---------------------------------------------------------

    async def command(self, line: dict[str, Any]) -> dict[str, Any]:
        cmd = line["cmd"]
        if cmd == "bind":
            wanted = line.get("addresses") or list(addresses(line["count"], line.get("start", 0)))
            failed = await self.bind(wanted)
            return {"bound": len(self.servers), "failed": failed}
        if cmd == "joins":
            joins, self.joins = self.joins, [] if line.get("clear", True) else self.joins
            return {"joins": joins}
        if cmd == "state":
            moved = 0
            for address in line.get("addresses") or list(self.bots):
                bot = self.bots.get(address)
                if bot is not None and bot.state in line.get("from", [bot.state]) and bot.state != line["state"]:
                    bot.move(line["state"], line.get("message", f"the bot is {line['state']}"), line.get("reason"))
                    moved += 1
            return {"moved": moved}
        if cmd == "reset":
            for address in line.get("addresses") or list(self.bots):
                if address in self.bots:
                    self.bots[address].reset()
            return {"reset": True}
        if cmd == "stats":
            return {
                "bound": len(self.servers),
                "requests": self.requests,
                "states": _count(b.state for b in self.bots.values()),
            }
        return {"error": f"unknown command {cmd!r}"}


def _field(body: bytes, name: str) -> str | None:
    try:
        value = json.loads(body or b"{}").get(name)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _count(items: Iterator[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


_REASONS = {200: "OK", 404: "Not Found"}


class Connection:
    """One HTTP/1.1 connection to one bot's address, on a non-blocking socket."""

    __slots__ = ("bot", "buffer", "fd", "open", "out", "sock", "started", "started_kernel", "stub", "timer", "waiting")

    def __init__(self, stub: Stub, bot: Bot, sock: socket.socket) -> None:
        self.stub = stub
        self.bot = bot
        self.sock = sock
        self.fd = sock.fileno()
        self.open = True
        self.buffer = b""
        #: Stamps of the first bytes of the request being read (None between requests).
        self.started: float | None = None
        self.started_kernel: float | None = None
        self.waiting = False
        self.timer: asyncio.TimerHandle | None = None
        self.out = b""
        stub.loop.add_reader(self.fd, self.readable)

    def readable(self) -> None:
        at = time.time()  # first: this is the read stamp
        try:
            data, ancillary, _, _ = self.sock.recvmsg(65536, 256)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()
            return
        kernel = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                seconds, nanoseconds = struct.unpack("qq", payload[:16])
                kernel = seconds + nanoseconds / 1e9
        self.stub.arrived(self, at, kernel, data)

    def close(self) -> None:
        if not self.open:
            return
        self.open = False
        self.stub.loop.remove_reader(self.fd)
        if self.out:
            self.stub.loop.remove_writer(self.fd)
        if self.timer is not None:
            self.timer.cancel()
        self.sock.close()

    def feed(self, at: float, kernel: float | None, data: bytes) -> None:
        if self.started is None:
            self.started, self.started_kernel = at, kernel
        self.buffer += data
        while self.open and not self.waiting:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1").split("\r\n")
            length = 0
            for header in head[1:]:
                key, _, value = header.partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value.strip())
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body = self.buffer[head_end + 4 : end]
            self.buffer = self.buffer[end:]
            started, started_kernel = self.started, self.started_kernel
            assert started is not None  # set by the first bytes of this request (above, or as the last one ended)
            self.started, self.started_kernel = (at, kernel) if self.buffer else (None, None)
            method, target = head[0].split(" ")[:2]
            self.stub.handle(self, self.bot, started, started_kernel, method, target, body)

    def answer(self, code: int, body: bytes) -> None:
        if not self.open:
            return
        self.send(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (code, _REASONS.get(code, "").encode(), len(body))
            + body
        )

    def send(self, data: bytes) -> None:
        if self.out:
            self.out += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self.out = data[sent:]
            self.stub.loop.add_writer(self.fd, self.writable)

    def writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self.out = self.out[sent:]
        if not self.out:
            self.stub.loop.remove_writer(self.fd)

    def hold(self, bot: Bot, timeout: float) -> None:
        """A long-poll: answer on the bot's next change or after `timeout`."""
        self.waiting = True

        def release() -> None:
            if not self.waiting:
                return
            self.waiting = False
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if release in bot.waiters:
                bot.waiters.remove(release)
            self.answer(200, bot.document())
            if self.buffer:
                self.feed(time.time(), None, b"")

        bot.waiters.append(release)
        self.timer = self.stub.loop.call_later(timeout, release)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stub")
    parser.add_argument("--port", type=int, default=18181)
    parser.add_argument("--count", type=int, default=0, help="addresses to pre-bind from 127.0.0.10")
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stub = Stub(args.port)
    failed = await stub.bind(list(addresses(args.count)))
    out = sys.stdout
    out.write(json.dumps({"ready": True, "bound": len(stub.servers), "failed": failed, "nofile": hard}) + "\n")
    out.flush()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        raw = await reader.readline()
        if not raw:
            return
        try:
            reply = await stub.command(json.loads(raw))
        except Exception as error:  # report, keep serving
            reply = {"error": repr(error)}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    asyncio.run(main())
