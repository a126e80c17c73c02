"""The BotSchedule controller: observe -> `core.schedule_plan` -> act -> publish -> sleep until computed.

Shaped like the ScheduledBot engine (runtime/engine.py): kopf only delivers
watch events, which refresh an in-memory picture of each BotSchedule and of
the ScheduledBots of its namespace; every pass re-derives what to do from that
picture and the clock, so a restart or a lost event leaves nothing half-done.

- Passes of one schedule never overlap: a poke during a pass marks it dirty and
  one more pass follows (runtime/workqueue.py). Each pass reads `now` once.
- Its next wake-up is one timer at the earlier of the plan's `wake_at`
  (an occurrence entering the horizon or starting, a concurrency decision) and,
  for a feed, its `fetch_at` (the poll interval, or the back-off after a
  failure); nothing wakes on a fixed period.
- A child's watch event pokes its schedule (found by its controller
  ownerReference and uid, never by name alone: a ScheduledBot this schedule did
  not create is never adopted, patched or deleted). A hand-written bot that
  appears, goes or moves pokes the schedules of its namespace, for the
  duplicate rule.
- The writes are idempotent: children are created under their occurrence's
  name (AlreadyExists is success), patched and deleted with a precondition on
  the uid the pass saw.

The parts: runtime/schedule_index.py keeps the ScheduledBots of each namespace,
runtime/schedule_planner.py reads a schedule's feed and plans it,
runtime/schedule_actions.py carries out a pass's actions and
runtime/schedule_publisher.py writes its status and Events; this module wires
them, takes the watch events and runs the pass.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from scheduledbot.adapters.kube import Kube, Permission
from scheduledbot.api.resource import BOT_SCHEDULE, GROUP
from scheduledbot.runtime.cache import kept, newer
from scheduledbot.runtime.schedule_actions import ChildActions
from scheduledbot.runtime.schedule_feeds import FeedReader
from scheduledbot.runtime.schedule_index import BotIndex, Key, matters_to_others, object_key
from scheduledbot.runtime.schedule_planner import REFRESH_ANNOTATION, SchedulePlanner
from scheduledbot.runtime.schedule_publisher import ScheduleEntry, SchedulePublisher
from scheduledbot.runtime.workqueue import Passes

log = logging.getLogger(__name__)

#: What kopf's watch of BotSchedules needs (the ScheduledBot watch is runtime/handlers.py's).
SCHEDULE_WATCHES: Final = frozenset(Permission(GROUP, BOT_SCHEDULE.plural, verb) for verb in ("list", "watch"))

#: Passes at once: 1,000 schedules found at start-up queue politely.
_CONCURRENT_PASSES: Final = 16


@dataclass(frozen=True, slots=True)
class PassCounts:
    """What the controller has done, for metrics and the benchmark."""

    passes: int
    creates: int
    patches: int
    deletes: int
    status_writes: int
    events: int
    feed_reads: int


class ScheduleController:
    def __init__(
        self,
        *,
        kube: Kube,
        feeds: FeedReader,
        extra_meeting_hosts: frozenset[str],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self._kube: Final = kube
        #: Whether this replica writes (runtime/leader.py); a standby keeps the picture only.
        self._leading: Final = leading
        self._feeds: Final = feeds
        self._clock: Final = clock
        self._entries: Final[dict[Key, ScheduleEntry]] = {}
        #: What the parts have done (`PassCounts`'s fields), each counting its own requests.
        self._counts: Final[Counter[str]] = Counter()
        self._bots: Final = BotIndex()
        self._planner: Final = SchedulePlanner(
            feeds=feeds, bots=self._bots, extra_meeting_hosts=extra_meeting_hosts, counts=self._counts
        )
        self._publisher: Final = SchedulePublisher(kube=kube, counts=self._counts)
        self._actions: Final = ChildActions(kube=kube, index=self._bots, publisher=self._publisher, counts=self._counts)
        self._passes: Final[Passes[Key]] = Passes(
            run=self._pass,
            concurrency=_CONCURRENT_PASSES,
            label=lambda key: "BotSchedule " + "/".join(key),
            known=self._entries.__contains__,
            log=log,
            idle=self._first_done,
        )
        #: Schedules known at start-up whose first pass has not finished yet, and when start-up began.
        self._first_pending: set[Key] = set()
        self._started = time.monotonic()
        self.first_plan_seconds: float | None = None

    @property
    def counts(self) -> PassCounts:
        return PassCounts(**{name: self._counts[name] for name in PassCounts.__slots__})

    async def prime(self, namespaces: tuple[str, ...]) -> None:
        """List every ScheduledBot, then every BotSchedule, and plan the schedules at once.

        The bots first: a schedule planned before its children are known would try to
        create them again (harmless, AlreadyExists) and could count them as missed.
        kopf's watches then bring the same objects, which change nothing.
        """
        self._started = time.monotonic()
        listed = []
        for namespace in namespaces or (None,):
            for body in await self._kube.list_bots(namespace):
                self.bot_event(None, body)
            listed += await self._kube.list_schedules(namespace)
        self._first_pending = {object_key(body) for body in listed}
        if not self._first_pending:
            self.first_plan_seconds = 0.0
        for body in listed:
            self.schedule_event(None, body)

    # Watch events (from kopf) ---------------------------------------------------------------

    def schedule_event(self, kind: str | None, body: dict[str, Any]) -> None:
        key = object_key(body)
        if kind == "DELETED":
            self._forget(key)  # the garbage collector deletes the children
            return
        entry = self._entries.setdefault(key, ScheduleEntry(key=key))
        if entry.body is not None and entry.body["metadata"].get("uid") != body["metadata"].get("uid"):
            self._forget(key)  # deleted and created again under the same name: a new schedule
            entry = self._entries.setdefault(key, ScheduleEntry(key=key))
        if entry.body is None or (_version(body) != _version(entry.body) and newer(body, entry.body)):
            entry.body = kept(body)
            self.poke(key)

    def bot_event(self, kind: str | None, body: dict[str, Any]) -> None:
        change = self._bots.event(kind, body)
        if change is None:
            return
        namespace, _ = object_key(body)
        before, after = change
        if before is not None and before.schedule_name is not None:
            self.poke((namespace, before.schedule_name))
        if after is not None and after.schedule_name is not None:
            if before is None or after.schedule_name != before.schedule_name:
                self.poke((namespace, after.schedule_name))
        elif matters_to_others(change):
            # A hand-written bot takes or frees a meeting slot: the duplicate rule of every schedule here.
            for key in [key for key in self._entries if key[0] == namespace]:
                self.poke(key)

    # Passes ---------------------------------------------------------------------------------

    def wake_all(self) -> None:
        """A pass of every schedule now: this replica has just become the one that writes."""
        self._passes.poke_all(self._entries)

    def poke(self, key: Key) -> None:
        self._passes.poke(key)

    async def _pass(self, key: Key) -> None:
        entry = self._entries.get(key)
        if entry is None or entry.body is None:
            return
        if not self._leading():
            # A standby neither writes nor reads feeds; `wake_all` passes every schedule when it leads.
            self._wake(entry, None, self._clock())
            return
        self._counts["passes"] += 1
        now = self._clock()
        decision = await self._planner.plan(entry, now)
        for action in decision.actions:
            await self._actions.act(entry, action, now)
        await self._publisher.publish(entry, decision.status)
        entry.fetch_at = decision.fetch_at
        self._wake(entry, min(filter(None, (decision.wake_at, decision.fetch_at)), default=None), now)

    def _wake(self, entry: ScheduleEntry, at: datetime | None, now: datetime) -> None:
        if at is None:
            self._passes.wake(entry.key, None, now)
            return
        # At least a moment later: a wake-up in the past must not turn into a pass that spins.
        self._passes.wake_in(entry.key, max((at - now).total_seconds(), 0.05))

    # Bookkeeping ----------------------------------------------------------------------------

    def _first_done(self, key: Key) -> None:
        if key in self._first_pending:
            self._first_pending.discard(key)
            if not self._first_pending and self.first_plan_seconds is None:
                self.first_plan_seconds = time.monotonic() - self._started
                log.info("planned every BotSchedule known at start-up in %.2f s", self.first_plan_seconds)

    def schedules(self) -> int:
        return len(self._entries)

    def _forget(self, key: Key) -> None:
        self._entries.pop(key, None)
        self._feeds.forget(key)
        self._first_done(key)
        self._passes.forget(key)

    async def close(self) -> None:
        for key in list(self._entries):
            self._forget(key)
        await self._passes.close()


def _version(body: dict[str, Any]) -> object:
    return body["metadata"].get("resourceVersion")


#: REFRESH_ANNOTATION is schedule_planner's, named here too where the BotSchedule's users look for it.
__all__ = ["REFRESH_ANNOTATION", "SCHEDULE_WATCHES", "Key", "PassCounts", "ScheduleController"]
