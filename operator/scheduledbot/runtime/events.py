"""Events, posted after the statuses that matter and aggregated per cohort.

Why not post each Event inside its pass
=======================================
At a join instant a thousand passes each wrote an Event, a finalizer and the
`joining` status, in that order, 32 at a time: the last bot showed `joining` 24 s
after joinAt, behind a thousand Events nobody needed first. Now a pass writes its
status and hands its Events here; they leave in the background, a few at a time
(`IN_FLIGHT`), never ahead of a status.

Aggregation
===========
When the backlog holds `AGGREGATE_AT` or more Events of one namespace, type and
reason (a cohort sharing an instant), they leave as ONE Event on the cohort's first
bot, its message naming how many bots and a few of them (`count` carries the
number). Each bot's own status still says the same for it. A lone Event, or a
handful, is posted on its own bot as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

log = logging.getLogger(__name__)

IN_FLIGHT: Final = 4
AGGREGATE_AT: Final = 10
#: Names listed in an aggregated Event's message; the rest are counted.
_NAMED: Final = 5
#: Backlog bound: beyond it, the oldest Events are dropped (and the drop is logged).
MAX_BACKLOG: Final = 20_000


class EventPoster(Protocol):
    async def post_event(
        self,
        body: dict[str, Any],
        *,
        type_: str,
        reason: str,
        message: str,
        now: datetime,
        count: int = 1,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class _Pending:
    body: dict[str, Any]
    type_: str
    reason: str
    message: str
    now: datetime

    @property
    def cohort(self) -> tuple[str, str, str]:
        return (self.body["metadata"]["namespace"], self.type_, self.reason)


class EventSink:
    def __init__(self, kube: EventPoster) -> None:
        self._kube = kube
        #: The backlog by cohort, oldest cohort first (dicts keep insertion order).
        self._cohorts: dict[tuple[str, str, str], deque[_Pending]] = {}
        self._size = 0
        self._workers: set[asyncio.Task[None]] = set()
        self.aggregated = 0
        self.dropped = 0

    def emit(self, body: dict[str, Any], *, type_: str, reason: str, message: str, now: datetime) -> None:
        """Queue one Event; never waits."""
        if self._size >= MAX_BACKLOG:
            lost = self._take(1)[0]
            self.dropped += 1
            log.warning("event backlog full; dropped %s for %s", lost.reason, lost.body["metadata"]["name"])
        pending = _Pending(body, type_, reason, message, now)
        self._cohorts.setdefault(pending.cohort, deque()).append(pending)
        self._size += 1
        if len(self._workers) < IN_FLIGHT:
            task = asyncio.get_running_loop().create_task(self._work(), context=contextvars.Context())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    def _take(self, most: int) -> list[_Pending]:
        """Up to `most` Events of the oldest cohort."""
        key = next(iter(self._cohorts))
        queue = self._cohorts[key]
        taken = [queue.popleft() for _ in range(min(most, len(queue)))]
        if not queue:
            del self._cohorts[key]
        self._size -= len(taken)
        return taken

    async def _work(self) -> None:
        while self._cohorts:
            key = next(iter(self._cohorts))
            cohort = self._take(len(self._cohorts[key]) if len(self._cohorts[key]) >= AGGREGATE_AT else 1)
            first = cohort[0]
            if len(cohort) > 1:
                self.aggregated += len(cohort)
            await self._kube.post_event(
                first.body,
                type_=first.type_,
                reason=first.reason,
                message=_aggregate(cohort) if len(cohort) > 1 else first.message,
                now=cohort[-1].now,
                count=len(cohort),
            )

    async def close(self, *, grace: float = 5.0) -> None:
        """Post what is queued, for at most `grace` seconds; then give up on the rest (logged)."""
        if self._workers:
            await asyncio.wait(list(self._workers), timeout=grace)
        if self._size:
            log.warning("shutting down with %d Events not posted", self._size)
        for task in list(self._workers):
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)


def _aggregate(cohort: list[_Pending]) -> str:
    names = [p.body["metadata"]["name"] for p in cohort]
    shown = ", ".join(names[:_NAMED])
    more = f" and {len(names) - _NAMED} more" if len(names) > _NAMED else ""
    return f"{cohort[0].reason} for {len(names)} ScheduledBots at once ({shown}{more}); the first: {cohort[0].message}"
