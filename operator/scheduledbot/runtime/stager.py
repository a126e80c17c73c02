"""Which waiting bot creates its Pod when: cohorts, their windows (core.pacing), each bot's slot.

The engine tells the stager about every bot waiting in `scheduled` (`want`), about
each Pod it created (`created`) and each that became Ready (`ready`). The stager
keeps one timer, at the start of the next cohort's window; when a window opens it
gives each of the cohort's bots a slot, spread evenly over the window, and pokes
them: a pass that sees its slot due creates the Pod (core.plan, `Observed.stage_by`).

The pace is measured while it runs: Pods Ready per second while at least
`BACKLOG` created Pods waited for the nodes (the cluster, not the pace, was the
limit then), every `MEASURE_SECONDS`; and the time a Pod takes to become Ready, as
a weighted mean with a safety factor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Final, Generic, TypeVar

from scheduledbot.core import pacing
from scheduledbot.runtime.clock import Clock, SystemClock

K = TypeVar("K", bound=Hashable)

#: The pace before anything was measured, Pods per second; and the time to Ready, seconds.
INITIAL_RATE: Final = 20.0
INITIAL_READY_SECONDS: Final = 10.0
#: Created-but-not-Ready Pods from which the cluster is taken to be the limit.
BACKLOG: Final = 10
MEASURE_SECONDS: Final = 5.0
#: Planned time to Ready = this times the measured mean, and never under INITIAL_READY_SECONDS.
READY_SAFETY: Final = 1.5
_READY_WEIGHT: Final = 0.2


class Stager(Generic[K]):
    def __init__(self, *, poke: Callable[[K], None], clock: Clock | None = None, rate: float = INITIAL_RATE) -> None:
        self._poke = poke
        self._clock: Clock = clock or SystemClock()
        self.rate = rate
        self._ready_mean = INITIAL_READY_SECONDS / READY_SAFETY
        #: Waiting bots by cohort (stageAt, joinAt), and each waiting bot's cohort.
        self._cohorts: dict[tuple[datetime, datetime], set[K]] = {}
        self._cohort_of: dict[K, tuple[datetime, datetime]] = {}
        self._keys: dict[tuple[datetime, datetime], tuple[datetime, datetime]] = {}
        self._slots: dict[K, datetime] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._replan_due = False
        #: Created Pods not Ready yet; Ready Pods counted since `_measure_from` while there was a backlog.
        self._unready: set[K] = set()
        self._measure_from: float | None = None
        self._measured = 0

    @property
    def ready_seconds(self) -> float:
        """The time a Pod is planned to take from creation to Ready."""
        return max(INITIAL_READY_SECONDS, READY_SAFETY * self._ready_mean)

    def want(self, key: K, *, stage_at: datetime, join_at: datetime) -> datetime | None:
        """Bot `key` waits to be staged; its creation slot, once its cohort's window has opened."""
        cohort = (stage_at, join_at)
        if self._cohort_of.get(key) != cohort:
            self._leave(key)
            # The cohort's own key, not this pass's equal one: the bots of a meeting share one
            # pair of datetimes (bench/memory.py, 60 cohorts: 134 bytes per bot before, 80 after).
            cohort = self._keys.setdefault(cohort, cohort)
            self._cohort_of[key] = cohort
            self._cohorts.setdefault(cohort, set()).add(key)
            self._replan_soon()
        return self._slots.get(key)

    def done(self, key: K) -> None:
        """`key` no longer waits (staged, failed, deleted, or its Pod exists)."""
        if key in self._cohort_of:
            self._leave(key)
            self._replan_soon()

    def forget(self, key: K) -> None:
        self.done(key)
        self._unready.discard(key)

    def created(self, key: K) -> None:
        self._unready.add(key)

    def ready(self, key: K, *, seconds: float | None, at: float) -> None:
        """`key`'s Pod became Ready, `seconds` after its creation (None: unknown), at epoch `at`."""
        backlog = len(self._unready)
        self._unready.discard(key)
        if seconds is not None and seconds >= 0:
            self._ready_mean += _READY_WEIGHT * (seconds - self._ready_mean)
        if backlog < BACKLOG:
            self._measure_from, self._measured = None, 0
            return
        if self._measure_from is None:
            self._measure_from, self._measured = at, 0
            return
        self._measured += 1
        if at - self._measure_from >= MEASURE_SECONDS:
            self.rate = pacing.adapt(self.rate, ready=self._measured, seconds=at - self._measure_from)
            self._measure_from, self._measured = at, 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # Planning -----------------------------------------------------------------------

    def _leave(self, key: K) -> None:
        cohort = self._cohort_of.pop(key, None)
        self._slots.pop(key, None)
        if cohort is None:
            return
        members = self._cohorts[cohort]
        members.discard(key)
        if not members:
            del self._cohorts[cohort]
            del self._keys[cohort]

    def _replan_soon(self) -> None:
        # One replan per burst of changes (10,000 bots found at start-up), not one per bot.
        if not self._replan_due:
            self._replan_due = True
            asyncio.get_running_loop().call_soon(self._replan)

    def _replan(self) -> None:
        self._replan_due = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self._clock.now()
        keys = list(self._cohorts)
        cohorts = [pacing.Cohort(stage_at=s, join_at=j, size=len(self._cohorts[(s, j)])) for s, j in keys]
        windows = pacing.windows(cohorts, rate=self.rate)
        next_start: datetime | None = None
        for key, window in zip(keys, windows, strict=True):
            if window.start > now:
                next_start = window.start if next_start is None else min(next_start, window.start)
                continue
            waiting = sorted((k for k in self._cohorts[key] if k not in self._slots), key=repr)
            for bot, slot in zip(waiting, pacing.slots(window, count=len(waiting), now=now), strict=True):
                self._slots[bot] = slot
                self._poke(bot)
        if next_start is not None:
            self._timer = self._clock.call_at(next_start, self._replan)
