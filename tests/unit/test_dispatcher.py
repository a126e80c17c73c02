"""The join dispatcher against small real HTTP receivers on loopback, on the caller's
loop and in its own thread (`DispatcherThread`).

What is asserted is behaviour (who got a join, how many, what was reported, on which
thread; that the process is left as found), never how fast: timings belong in bench/.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest
from aiohttp import web

from scheduledbot.adapters.bots import JoinLine
from scheduledbot.core.model import SignalOutcome
from scheduledbot.runtime.dispatch_thread import DispatcherThread
from scheduledbot.runtime.dispatcher import SHARE_MIN, JoinDispatcher

TOKEN = "secret-token"


class Receiver:
    """A bot's control port reduced to `join`: records each request it gets."""

    def __init__(self) -> None:
        self.joins: list[dict[str, str]] = []
        self.auth: list[str] = []
        self.address = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/join", self._join)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.address = f"127.0.0.1:{port}"

    async def _join(self, request: web.Request) -> web.Response:
        self.joins.append(await request.json())
        self.auth.append(request.headers.get("Authorization", ""))
        return web.json_response(
            {
                "protocol": "v1",
                "version": 2,
                "state": "joining",
                "since": "2026-01-01T00:00:00Z",
                "message": "",
                "reason": None,
                "joinedBy": "signal",
                "requestId": self.joins[0]["requestId"],
                "exitCode": None,
            }
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    started = [Receiver() for _ in range(3)]
    for r in started:
        await r.start()
    yield started
    for r in started:
        await r.stop()


def line(receiver: Receiver, request_id: str, join_at: datetime, kind: type[JoinLine] = JoinLine) -> JoinLine:
    return kind(
        address=receiver.address,
        token=TOKEN,
        request_id=request_id,
        meeting_url="https://zoom.us/j/1",
        bot_name="Bot",
        join_at=join_at.isoformat(),
    )


async def settle(outcomes: Sequence[object], count: int) -> None:
    for _ in range(300):
        if len(outcomes) >= count:
            return
        await asyncio.sleep(0.01)


async def test_all_bots_sharing_an_instant_get_exactly_one_join_each(receivers: list[Receiver]) -> None:
    outcomes: list[tuple[int, SignalOutcome]] = []
    dispatcher: JoinDispatcher[int] = JoinDispatcher(report=lambda key, outcome: outcomes.append((key, outcome)))
    join_at = datetime.now(UTC) + timedelta(milliseconds=150)
    for i, receiver in enumerate(receivers):
        dispatcher.arm(i, join_at=join_at, not_before=None, line=line(receiver, f"r{i}", join_at), request_id=f"r{i}")
        # Arming the same join again (a second pass) changes nothing.
        dispatcher.arm(i, join_at=join_at, not_before=None, line=line(receiver, f"r{i}", join_at), request_id=f"r{i}")
    await settle(outcomes, 6)
    assert [len(r.joins) for r in receivers] == [1, 1, 1]
    assert [r.joins[0]["requestId"] for r in receivers] == ["r0", "r1", "r2"]
    assert all(auth == f"Bearer {TOKEN}" for r in receivers for auth in r.auth)
    sent = sorted(k for k, o in outcomes if o.sent_at is not None)
    answered = sorted(k for k, o in outcomes if o.report is not None)
    assert sent == [0, 1, 2] and answered == [0, 1, 2]
    assert all(o.sent_at is None or o.sent_at >= join_at for _, o in outcomes), "never before joinAt"
    # A pass after the signal re-arms the same join: it must not be sent twice.
    dispatcher.arm(0, join_at=join_at, not_before=None, line=line(receivers[0], "r0", join_at), request_id="r0")
    await asyncio.sleep(0.05)
    assert len(receivers[0].joins) == 1
    await dispatcher.close()


async def test_a_disarmed_join_is_never_sent(receivers: list[Receiver]) -> None:
    outcomes: list[tuple[str, SignalOutcome]] = []
    dispatcher: JoinDispatcher[str] = JoinDispatcher(report=lambda key, outcome: outcomes.append((key, outcome)))
    join_at = datetime.now(UTC) + timedelta(milliseconds=100)
    dispatcher.arm("a", join_at=join_at, not_before=None, line=line(receivers[0], "a", join_at), request_id="a")
    dispatcher.arm("b", join_at=join_at, not_before=None, line=line(receivers[1], "b", join_at), request_id="b")
    dispatcher.disarm("a")
    await settle(outcomes, 2)
    await asyncio.sleep(0.05)
    assert len(receivers[0].joins) == 0 and len(receivers[1].joins) == 1
    assert {k for k, _ in outcomes} == {"b"}
    await dispatcher.close()


async def test_an_unreachable_bot_is_reported_as_an_error() -> None:
    outcomes: list[tuple[str, SignalOutcome]] = []
    dispatcher: JoinDispatcher[str] = JoinDispatcher(report=lambda key, outcome: outcomes.append((key, outcome)))
    join_at = datetime.now(UTC) + timedelta(milliseconds=50)
    nowhere = JoinLine(
        address="127.0.0.1:9",
        token=TOKEN,
        request_id="x",
        meeting_url="https://zoom.us/j/1",
        bot_name="Bot",
        join_at=join_at.isoformat(),
    )
    dispatcher.arm("x", join_at=join_at, not_before=None, line=nowhere, request_id="x")
    await settle(outcomes, 1)
    assert len(outcomes) == 1 and outcomes[0][1].error is not None and outcomes[0][1].sent_at is None
    await dispatcher.close()


def test_a_join_request_is_prebuilt_http_with_the_bearer_token() -> None:
    built = JoinLine(
        address="127.0.0.10:8181",
        token=TOKEN,
        request_id="rid",
        meeting_url="https://zoom.us/j/1",
        bot_name="Bot",
        join_at="2026-01-01T00:00:00Z",
    ).request
    head, _, body = built.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/join HTTP/1.1\r\n")
    assert f"Authorization: Bearer {TOKEN}".encode() in head
    assert json.loads(body)["requestId"] == "rid"
    assert f"Content-Length: {len(body)}".encode() in head


async def test_every_bot_gets_one_join_and_outcomes_come_back_on_the_callers_thread(
    receivers: list[Receiver],
) -> None:
    outcomes: list[tuple[object, SignalOutcome, int]] = []
    lags: list[tuple[str, float]] = []
    dispatcher: DispatcherThread[int] = DispatcherThread(
        report=lambda key, outcome: outcomes.append((key, outcome, threading.get_ident())),
        lag=lambda loop, seconds: lags.append((loop, seconds)),
    )
    join_at = datetime.now(UTC) + timedelta(milliseconds=200)
    for i, receiver in enumerate(receivers):
        for _ in range(2):  # a second pass re-arms the same join: it changes nothing
            dispatcher.arm(
                i, join_at=join_at, not_before=None, line=line(receiver, f"r{i}", join_at), request_id=f"r{i}"
            )
    await settle(outcomes, 6)
    await settle(lags, 2)
    assert [len(r.joins) for r in receivers] == [1, 1, 1]
    assert sorted(int(str(k)) for k, o, _ in outcomes if o.sent_at is not None) == [0, 1, 2]
    assert sorted(int(str(k)) for k, o, _ in outcomes if o.report is not None) == [0, 1, 2]
    assert {thread for _, _, thread in outcomes} == {threading.get_ident()}
    assert all(o.sent_at is None or o.sent_at >= join_at for _, o, _ in outcomes), "never before joinAt"
    # One instant: each loop's lag measured once, never negative.
    assert sorted(loop for loop, _ in lags) == ["dispatcher", "operator"]
    assert all(seconds >= 0 for _, seconds in lags)
    await dispatcher.close()


async def test_a_join_disarmed_through_the_thread_is_never_sent(receivers: list[Receiver]) -> None:
    outcomes: list[tuple[object, SignalOutcome]] = []
    dispatcher: DispatcherThread[str] = DispatcherThread(report=lambda key, outcome: outcomes.append((key, outcome)))
    join_at = datetime.now(UTC) + timedelta(milliseconds=150)
    dispatcher.arm("a", join_at=join_at, not_before=None, line=line(receivers[0], "a", join_at), request_id="a")
    dispatcher.arm("b", join_at=join_at, not_before=None, line=line(receivers[1], "b", join_at), request_id="b")
    dispatcher.disarm("a")
    await settle(outcomes, 2)
    await asyncio.sleep(0.05)
    assert len(receivers[0].joins) == 0 and len(receivers[1].joins) == 1
    assert {k for k, _ in outcomes} == {"b"}
    await dispatcher.close()


async def test_the_quiet_window_leaves_the_collector_and_switch_interval_as_found(
    receivers: list[Receiver],
) -> None:
    switch = sys.getswitchinterval()
    seen: list[tuple[bool, float]] = []
    outcomes: list[object] = []

    def report(key: object, outcome: SignalOutcome) -> None:
        outcomes.append(outcome)

    def lag(loop: str, seconds: float) -> None:
        # Inside the window: the collector is off and the interpreter switches often.
        seen.append((gc.isenabled(), sys.getswitchinterval()))

    dispatcher: DispatcherThread[str] = DispatcherThread(report=report, lag=lag)
    join_at = datetime.now(UTC) + timedelta(milliseconds=700)  # beyond QUIET_AHEAD: the window opens on its timer
    dispatcher.arm("a", join_at=join_at, not_before=None, line=line(receivers[0], "a", join_at), request_id="a")
    await settle(outcomes, 2)
    await asyncio.sleep(0.05)
    assert len(seen) == 2 and all(not enabled and interval < switch for enabled, interval in seen)
    assert gc.isenabled() and sys.getswitchinterval() == switch
    await dispatcher.close()


async def test_close_stops_the_thread_and_ends_an_open_window(receivers: list[Receiver]) -> None:
    switch = sys.getswitchinterval()
    dispatcher: DispatcherThread[str] = DispatcherThread(report=lambda key, outcome: None)
    join_at = datetime.now(UTC) + timedelta(milliseconds=300)  # inside QUIET_AHEAD: the window opens at once
    dispatcher.arm("a", join_at=join_at, not_before=None, line=line(receivers[0], "a", join_at), request_id="a")
    await asyncio.sleep(0.05)
    await dispatcher.close()
    assert not any(t.name == "join-dispatcher" and t.is_alive() for t in threading.enumerate())
    assert gc.isenabled() and sys.getswitchinterval() == switch
    assert receivers[0].joins == []


class _Recorded(JoinLine):
    """A join line that notes which thread wrote it."""

    writers: ClassVar[list[str]] = []

    def write(self) -> None:
        self.writers.append(threading.current_thread().name)
        super().write()


async def test_a_batch_dealt_out_to_writer_threads_gives_every_bot_exactly_one_join(
    receivers: list[Receiver],
) -> None:
    outcomes: list[tuple[int, SignalOutcome]] = []
    dispatcher: JoinDispatcher[int] = JoinDispatcher(
        report=lambda key, outcome: outcomes.append((key, outcome)), writers=2
    )
    join_at = datetime.now(UTC) + timedelta(milliseconds=400)
    count = 2 * SHARE_MIN + 1
    _Recorded.writers = []
    for i in range(count):
        recorded = line(receivers[i % len(receivers)], f"r{i}", join_at, _Recorded)
        dispatcher.arm(i, join_at=join_at, not_before=None, line=recorded, request_id=f"r{i}")
    await settle(outcomes, 2 * count)
    received = sorted(j["requestId"] for r in receivers for j in r.joins)
    assert received == sorted(f"r{i}" for i in range(count)), "each bot once, none twice"
    assert sorted(k for k, o in outcomes if o.sent_at is not None) == list(range(count))
    assert all(o.sent_at is None or o.sent_at >= join_at for _, o in outcomes), "never before joinAt"
    # This thread wrote a share and the pool's thread the other.
    assert set(_Recorded.writers) == {threading.current_thread().name, "join-writer_0"}
    await dispatcher.close()
    assert not any(t.name.startswith("join-writer") and t.is_alive() for t in threading.enumerate())


class _BreaksOnce(JoinLine):
    """A line whose connection breaks just before its first write (the bot reset it)."""

    def write(self) -> None:
        if not getattr(self, "broke", False):
            self.broke = True
            assert self._sock is not None
            self._sock.shutdown(socket.SHUT_WR)
        super().write()


async def test_a_line_found_broken_at_the_instant_is_reopened_and_the_bot_joins_once(
    receivers: list[Receiver],
) -> None:
    outcomes: list[tuple[str, SignalOutcome]] = []
    dispatcher: JoinDispatcher[str] = JoinDispatcher(report=lambda key, outcome: outcomes.append((key, outcome)))
    join_at = datetime.now(UTC) + timedelta(milliseconds=150)
    broken = line(receivers[0], "a", join_at, _BreaksOnce)
    dispatcher.arm("a", join_at=join_at, not_before=None, line=broken, request_id="a")
    await settle(outcomes, 2)
    assert [j["requestId"] for j in receivers[0].joins] == ["a"]
    assert [(o.sent_at is not None, o.report is not None, o.error) for _, o in outcomes] == [
        (True, False, None),
        (False, True, None),
    ]
    await dispatcher.close()
