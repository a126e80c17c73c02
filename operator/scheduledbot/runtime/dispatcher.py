"""The join dispatcher: every armed join signal leaves at its instant, in one batch.

Why not kopf timers or one task per bot
=======================================
kopf timers run on intervals and `TemporaryError` delays are rounded and jittered;
one asyncio task per bot wakes a thousand tasks at the instant, each building its
request and awaiting its own write, so the last bot of a batch hears about it
~190 ms late on this machine. Here all bots sharing an instant share *one* timer
(`loop.call_at`), and the callback writes pre-built requests on connections opened
while the bots were staged, without a single `await` between the first write and
the last. The answers are read afterwards, off the critical path.

Precision
=========
The event loop wakes a timer within about a millisecond, sometimes early. The timer
is set `SPIN_AHEAD` before the instant and the callback spins for the rest, so the
first byte leaves at the instant, not up to a millisecond after. Instants come from
the injected `Clock` (runtime/clock.py), so unit scenarios run on a fake one.

A second, earlier timer (`REFRESH_AHEAD`) reopens the connections a bot closed while
it waited (idle time-outs), so none has to be opened at the instant.

Writers
=======
A write is mostly the kernel's loopback or network work, done with the interpreter lock
released. With `writers=N` the batch is dealt out to N threads, this one and a pool of
N - 1 that sleep between instants, so the kernel work of one share runs while another
thread holds the lock for its own bookkeeping. Measured on the 2-core
machine (`python -m bench.fanout --sizes 5000 --writers 2,1`, p99 of the kernel's
arrival stamps over 10 rounds): median 59 ms from two threads against 80 ms from one.
Batches smaller than two `SHARE_MIN` are written by this thread alone: a pool thread
takes longer to wake than they take to write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeAlias, TypeVar

from scheduledbot.adapters.bots import BotUnreachable, JoinLine
from scheduledbot.core.model import SignalOutcome
from scheduledbot.runtime.clock import Clock, SystemClock

log = logging.getLogger(__name__)

SPIN_AHEAD: Final = 0.002
REFRESH_AHEAD: Final = 1.0
#: The longest the callback spins: a guard against a clock step, not a tuning knob.
_MAX_SPIN: Final = 0.05
#: The smallest share of a batch handed to a pool writer.
SHARE_MIN: Final = 100

K = TypeVar("K", bound=Hashable)


def fire_time(join_at: datetime, not_before: datetime | None) -> float:
    """When a join armed with these times is written (epoch seconds): its batch's instant."""
    return max(join_at, not_before or join_at).timestamp()


@dataclass(slots=True)
class _Armed(Generic[K]):
    key: K
    join_at: datetime
    fire: float
    request_id: str
    line: JoinLine
    opening: asyncio.Task[None] | None = None
    #: Written; kept until disarmed, so that re-arming the same join cannot send it twice.
    fired: bool = False


@dataclass(slots=True)
class _Batch(Generic[K]):
    keys: set[K] = field(default_factory=set)
    fire_timer: asyncio.TimerHandle | None = None
    refresh_timer: asyncio.TimerHandle | None = None


class JoinDispatcher(Generic[K]):
    """Holds armed joins; `report(key, outcome)` hears what became of each.

    `report` is called when a signal was written (`sent_at` set), when the bot
    answered it (`report` set), or when it could not be sent (`error` set). It
    must be cheap: it runs inside the batch.
    """

    def __init__(
        self,
        *,
        report: Callable[[K, SignalOutcome], None],
        clock: Clock | None = None,
        instant: Callable[[float, float], None] | None = None,
        writers: int = 1,
    ) -> None:
        self._report = report
        self._clock: Clock = clock or SystemClock()
        #: Told `(fire, lag)` once a batch's writes are out: how late its timer ran, in seconds.
        self._instant = instant
        self._armed: dict[K, _Armed[K]] = {}
        self._batches: dict[float, _Batch[K]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool_size = writers - 1
        self._pool: ThreadPoolExecutor | None = None
        if self._pool_size:
            self._pool = ThreadPoolExecutor(max_workers=self._pool_size, thread_name_prefix="join-writer")
            # Started now, not at the first instant: a thread's start is a few hundred
            # microseconds the batch would wait for. (The pool starts a thread per
            # submit while none is idle, so this starts one at least.)
            for _ in range(self._pool_size):
                self._pool.submit(_warm)

    def arm(self, key: K, *, join_at: datetime, not_before: datetime | None, line: JoinLine, request_id: str) -> None:
        """Arm (or re-arm) the join of `key`. Re-arming the same join changes nothing."""
        fire = fire_time(join_at, not_before)
        current = self._armed.get(key)
        if (
            current is not None
            and current.request_id == request_id
            and current.line.address == line.address
            and (current.fire == fire or (current.fired and not_before is None))
        ):
            return
        self.disarm(key)
        armed: _Armed[K] = _Armed(key=key, join_at=join_at, fire=fire, request_id=request_id, line=line)
        armed.opening = self._spawn(self._open(armed))
        self._armed[key] = armed
        batch = self._batches.get(fire)
        if batch is None:
            batch = self._batches[fire] = _Batch[K]()
            batch.fire_timer = self._clock.call_at(fire - SPIN_AHEAD, self._fire, fire)
            if fire - self._clock.time() > REFRESH_AHEAD:
                batch.refresh_timer = self._clock.call_at(fire - REFRESH_AHEAD, self._refresh, fire)
        batch.keys.add(key)

    def disarm(self, key: K) -> None:
        armed = self._armed.pop(key, None)
        if armed is None:
            return
        if armed.opening is not None:
            armed.opening.cancel()
        armed.line.close()
        batch = self._batches.get(armed.fire)
        if batch is not None:
            batch.keys.discard(key)
            if not batch.keys:
                self._drop_batch(armed.fire)

    async def close(self) -> None:
        for key in list(self._armed):
            self.disarm(key)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _drop_batch(self, fire: float) -> None:
        batch = self._batches.pop(fire)
        for timer in (batch.fire_timer, batch.refresh_timer):
            if timer is not None:
                timer.cancel()

    def _refresh(self, fire: float) -> None:
        batch = self._batches.get(fire)
        for key in batch.keys if batch else ():
            armed = self._armed[key]
            if not armed.line.ready and (armed.opening is None or armed.opening.done()):
                armed.opening = self._spawn(self._open(armed))

    def _fire(self, fire: float) -> None:
        batch = self._batches.pop(fire, None)
        if batch is None:
            return
        if batch.refresh_timer is not None:
            batch.refresh_timer.cancel()
        lag = max(0.0, self._clock.time() - (fire - SPIN_AHEAD))
        batched = [self._armed[key] for key in batch.keys]
        for armed in batched:
            armed.fired = True
        shares = min(self._pool_size + 1, max(1, len(batched) // SHARE_MIN))
        # Spin on the monotonic counter for what remains: the clock's own time may be a
        # fake that stands still while nothing awaits.
        ahead = fire - self._clock.time()
        if 0 < ahead < _MAX_SPIN:
            until = time.perf_counter() + ahead
            while time.perf_counter() < until:
                pass
        pooled: list[tuple[list[_Armed[K]], Future[_Written[K]]]] = []
        if self._pool is not None:
            for i in range(1, shares):
                share = batched[i::shares]
                pooled.append((share, self._pool.submit(_write, share, self._clock.time)))
        sent, late = _write(batched[::shares], self._clock.time)
        for share, written in pooled:
            more_sent, more_late = _result(written, share)
            sent += more_sent
            late += more_late
        if self._instant is not None:
            self._instant(fire, lag)
        # Everything below is off the critical path: all ready bots have their bytes.
        for armed, at in sent:
            self._sent(armed, at)
            self._spawn(self._answer(armed))
        for armed in late:
            self._spawn(self._send_late(armed))

    async def _open(self, armed: _Armed[K]) -> None:
        try:
            await armed.line.open()
        except (TimeoutError, OSError) as error:
            # Not fatal: the refresh timer and the instant itself try again.
            log.debug("pre-connect to %s failed: %r", armed.line.address, error)

    async def _send_late(self, armed: _Armed[K]) -> None:
        try:
            if armed.opening is not None and not armed.opening.done():
                await armed.opening
            if not armed.line.ready:
                await armed.line.open()
            armed.line.write()
        except (TimeoutError, OSError) as error:
            message = f"could not connect to the bot at {armed.line.address}: {error!r}"
            self._report(armed.key, SignalOutcome(join_at=armed.join_at, sent_at=None, error=message, report=None))
            return
        self._sent(armed, self._clock.time())
        await self._answer(armed)

    def _sent(self, armed: _Armed[K], at: float) -> None:
        """The signal is out: that is the join, as far as timing goes."""
        sent_at = datetime.fromtimestamp(at, UTC)
        self._report(armed.key, SignalOutcome(join_at=armed.join_at, sent_at=sent_at, error=None, report=None))

    async def _answer(self, armed: _Armed[K]) -> None:
        """The bot's answer carries its state; a lost answer is left to the state long-poll."""
        try:
            report = await armed.line.answer()
        except BotUnreachable as error:
            log.warning("join signal sent, but no answer: %s", error)
            return
        self._report(armed.key, SignalOutcome(join_at=armed.join_at, sent_at=None, error=None, report=report))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


#: A share's outcome: the bots written, each with when, and those left for the slow way.
_Written: TypeAlias = tuple[list[tuple[_Armed[K], float]], list[_Armed[K]]]


def _write(share: list[_Armed[K]], now: Callable[[], float]) -> _Written[K]:
    """Write each ready line of `share` (run by the dispatcher's thread and the pool's)."""
    sent: list[tuple[_Armed[K], float]] = []
    late: list[_Armed[K]] = []
    for armed in share:
        if not armed.line.ready:
            late.append(armed)
            continue
        try:
            armed.line.write()
        except OSError:
            # Broken since it was opened (the bot closed or reset it): reopened and written late.
            late.append(armed)
            continue
        sent.append((armed, now()))
    return sent, late


def _result(written: Future[_Written[K]], share: list[_Armed[K]]) -> _Written[K]:
    """A pool share's outcome; the wait releases the interpreter lock to the pool's thread."""
    try:
        return written.result()
    except Exception:
        # A bug, not a bot: its bots still go, the slow way, rather than the batch failing.
        log.exception("a join writer failed; its share goes the slow way")
        return [], share


def _warm() -> None:
    """Nothing: submitted at construction, so that the pool's threads are started."""
