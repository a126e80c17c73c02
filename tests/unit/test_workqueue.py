"""The per-key pass queue (runtime/workqueue.py) on looptime's fake clock: no real sleeps."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import pytest

from fakes import ORIGIN, LoopClock
from scheduledbot.runtime.workqueue import Passes

pytestmark = [pytest.mark.looptime, pytest.mark.timeout(30)]

log = logging.getLogger("test_workqueue")


class Recorder:
    """Passes that record when they ran (seconds of loop time) and may fail, wait or poke."""

    def __init__(self, concurrency: int = 4, known: Callable[[str], bool] = lambda key: True) -> None:
        self.clock = LoopClock()
        self.spins = 0
        self.ran: list[tuple[str, float]] = []
        self.running: set[str] = set()
        self.most = 0
        self.fail: dict[str, int] = {}
        self.hold = 0.0
        self.idle: list[str] = []
        self.queue: Passes[str] = Passes(
            run=self.run,
            concurrency=concurrency,
            label=str,
            known=known,
            log=log,
            clock=self.clock,
            idle=self.idle.append,
            spun=self.spun,
        )

    def spun(self) -> None:
        self.spins += 1

    async def run(self, key: str) -> None:
        assert key not in self.running, "passes of one key overlap"
        self.running.add(key)
        self.most = max(self.most, len(self.running))
        self.ran.append((key, round(self.clock.time() - ORIGIN.timestamp(), 3)))
        try:
            if self.hold:
                await asyncio.sleep(self.hold)
            if self.fail.get(key, 0) > 0:
                self.fail[key] -= 1
                raise RuntimeError("the API server is away")
        finally:
            self.running.discard(key)

    def times(self, key: str) -> list[float]:
        return [at for k, at in self.ran if k == key]


async def one_pass(rec: Recorder) -> datetime:
    """A first pass of key "a" (at 0.0), over by the instant returned (0.1)."""
    rec.queue.poke("a")
    await asyncio.sleep(0.1)
    return rec.clock.now()


@pytest.fixture
async def rec() -> AsyncIterator[Recorder]:
    r = Recorder()
    yield r
    await r.queue.close()


async def test_pokes_during_a_pass_bring_exactly_one_more_pass(rec: Recorder) -> None:
    rec.hold = 1.0
    rec.queue.poke("a")
    await asyncio.sleep(0.5)
    for _ in range(5):
        rec.queue.poke("a")
    await asyncio.sleep(10)
    assert rec.times("a") == [0.0, 1.0]
    assert rec.idle == ["a"]


async def test_no_more_than_the_concurrency_run_at_once() -> None:
    rec = Recorder(concurrency=2)
    rec.hold = 1.0
    for key in "abcde":
        rec.queue.poke(key)
    await asyncio.sleep(10)
    assert rec.most == 2
    assert sorted(at for _, at in rec.ran) == [0.0, 0.0, 1.0, 1.0, 2.0]
    await rec.queue.close()


async def test_a_wake_up_is_one_timer_replaced_by_the_next(rec: Recorder) -> None:
    now = await one_pass(rec)
    rec.queue.wake("a", now + timedelta(seconds=5), now)
    rec.queue.wake("a", now + timedelta(seconds=3), now)
    await asyncio.sleep(10)
    assert rec.times("a") == [0.0, 3.1]


async def test_a_pass_asked_within_a_delay_neither_replaces_the_wake_up_nor_is_replaced(rec: Recorder) -> None:
    now = await one_pass(rec)
    rec.queue.wake_within("a", 1)
    rec.queue.wake("a", now + timedelta(seconds=3), now)
    rec.queue.wake_within("a", 2)  # later than the one asked: nothing changes
    await asyncio.sleep(10)
    assert rec.times("a") == [0.0, 1.1, 3.1]


async def test_a_pass_asked_within_a_delay_leaves_the_wake_up_to_be_moved(rec: Recorder) -> None:
    now = await one_pass(rec)
    rec.queue.wake("a", now + timedelta(seconds=3), now)
    rec.queue.wake_within("a", 1)
    await asyncio.sleep(1.5)
    # The pass it brought moves the wake-up: the one at 3 s is gone, not left armed.
    later = rec.clock.now()
    rec.queue.wake("a", later + timedelta(seconds=4), later)
    await asyncio.sleep(10)
    assert rec.times("a") == [0.0, 1.1, 5.6]


async def test_any_pass_meets_a_pass_asked_within_a_delay(rec: Recorder) -> None:
    now = await one_pass(rec)
    rec.queue.wake("a", now + timedelta(seconds=3), now)
    rec.queue.wake_within("a", 5)
    await asyncio.sleep(1)
    rec.queue.poke("a")
    await asyncio.sleep(10)
    assert rec.times("a") == [0.0, 1.1, 3.1]


async def test_the_same_wake_up_asked_again_keeps_its_timer_and_fires_once(rec: Recorder) -> None:
    rec.queue.poke("a")
    await asyncio.sleep(0.1)
    now = rec.clock.now()
    at = now + timedelta(seconds=3)
    rec.queue.wake("a", at, now)
    timer = rec.queue._slots["a"].timer
    rec.queue.wake("a", at, now)
    assert rec.queue._slots["a"].timer is timer and timer is not None and not timer.cancelled()
    await asyncio.sleep(10)
    assert rec.times("a") == [0.0, 3.1]


async def test_a_wake_up_asked_again_after_its_timer_fired_fires_again(rec: Recorder) -> None:
    rec.queue.poke("a")
    await asyncio.sleep(0.1)
    now = rec.clock.now()
    at = now + timedelta(seconds=3)
    rec.queue.wake("a", at, now)
    await asyncio.sleep(3.5)
    # The same instant asked for again once its timer fired: a new timer, not the spent one.
    rec.queue.wake("a", at, now)
    await asyncio.sleep(10)
    assert rec.times("a") == [0.0, 3.1, 3.6]


async def test_a_wake_up_now_is_one_more_pass_at_once(rec: Recorder) -> None:
    asked = [False]

    async def run(key: str) -> None:
        rec.ran.append((key, rec.clock.time() - ORIGIN.timestamp()))
        if not asked[0]:
            asked[0] = True
            rec.queue.wake(key, rec.clock.now(), rec.clock.now())

    rec.queue._run = run
    rec.queue.poke("a")
    await asyncio.sleep(1)
    assert rec.times("a") == [0.0, 0.0]


async def test_a_failed_pass_is_tried_again_after_a_doubling_delay(rec: Recorder) -> None:
    rec.fail["a"] = 3
    rec.queue.poke("a")
    await asyncio.sleep(20)
    assert rec.times("a") == [0.0, 0.5, 1.5, 3.5]


async def test_a_pass_that_spins_is_counted_logged_once_and_deferred_a_second(
    rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    async def run(key: str) -> None:
        rec.ran.append((key, rec.clock.time() - ORIGIN.timestamp()))
        rec.queue.defer_spin(key, rec.clock.now())

    rec.queue._run = run
    rec.queue.poke("a")
    await asyncio.sleep(3.5)
    assert rec.times("a") == [0.0, 1.0, 2.0, 3.0]
    assert rec.spins == 4
    assert len([r for r in caplog.records if "without any change" in r.message]) == 1


async def test_a_forgotten_key_keeps_no_timer_and_gets_no_more_passes(rec: Recorder) -> None:
    now = await one_pass(rec)
    rec.queue.wake("a", now + timedelta(seconds=1), now)
    rec.queue.wake_within("a", 2)
    rec.queue.forget("a")
    rec.queue.wake_in("a", 1)
    rec.queue.wake_within("a", 1)
    await asyncio.sleep(5)
    assert rec.times("a") == [0.0]


async def test_a_poke_of_a_key_its_owner_does_not_know_is_dropped() -> None:
    rec = Recorder(known=lambda key: key != "gone")
    rec.queue.poke("gone")
    rec.queue.poke_all(["a", "gone", "b"])
    await asyncio.sleep(1)
    assert sorted(k for k, _ in rec.ran) == ["a", "b"]
    await rec.queue.close()


async def test_passes_run_in_an_empty_context(rec: Recorder) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="empty")
    seen: list[str] = []

    async def run(key: str) -> None:
        seen.append(var.get())

    rec.queue._run = run
    var.set("the caller's")
    rec.queue.poke("a")
    await asyncio.sleep(0.1)
    assert seen == ["empty"]
