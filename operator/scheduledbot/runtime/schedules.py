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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from scheduledbot.adapters.kube import ApiError, Kube, Permission
from scheduledbot.api.models import TERMINAL_STATES
from scheduledbot.api.resource import BOT_SCHEDULE, GROUP
from scheduledbot.api.schedule import ValidICal
from scheduledbot.core.model import Emit, EventType
from scheduledbot.core.schedule_children import BotRef, observe_bot
from scheduledbot.core.schedule_model import (
    CreateChild,
    DeleteChild,
    FeedState,
    ParsedSpec,
    PatchChild,
    ScheduleAction,
    SchedulePlan,
    ScheduleView,
    observe_schedule,
    parse_schedule,
)
from scheduledbot.core.schedule_plan import MeetingIndex, meeting_key, plan_schedule
from scheduledbot.runtime.cache import kept, newer
from scheduledbot.runtime.schedule_feeds import FeedReader
from scheduledbot.runtime.workqueue import Passes

log = logging.getLogger(__name__)

Key = tuple[str, str]

#: What kopf's watch of BotSchedules needs (the ScheduledBot watch is runtime/handlers.py's).
SCHEDULE_WATCHES: Final = frozenset(Permission(GROUP, BOT_SCHEDULE.plural, verb) for verb in ("list", "watch"))

#: Passes at once: 1,000 schedules found at start-up queue politely.
_CONCURRENT_PASSES: Final = 16
#: Set or change this annotation on a BotSchedule to have its feed read now (after fixing its Secret, say).
REFRESH_ANNOTATION: Final = "meetingbots.dev/refresh"
#: API answers to a child's creation or patch that no retry can change.
_REFUSALS: Final = frozenset({400, 403, 422})
#: Events remembered per schedule so that a repeated pass does not post the same one again.
_SAID_LIMIT: Final = 256


@dataclass(slots=True)
class _Entry:
    key: Key
    body: dict[str, Any] | None = None
    #: When the feed is to be read next (the last plan's `fetch_at`).
    fetch_at: datetime | None = None
    #: The refresh annotation's value at the last read.
    refresh: str | None = None
    said: set[tuple[str, str]] = field(default_factory=set)
    #: The spec of generation `parsed[0]`, parsed once (a pass for a child's event does not parse it again).
    parsed: tuple[int, ParsedSpec] | None = None


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
        self._kube = kube
        #: Whether this replica writes (runtime/leader.py); a standby keeps the picture only.
        self._leading = leading
        self._feeds = feeds
        self._extra_hosts = extra_meeting_hosts
        self._clock = clock
        self._entries: dict[Key, _Entry] = {}
        #: The ScheduledBots of each namespace, as the planner sees them; the same by controlling
        #: schedule, and the namespace's `MeetingIndex`: kept as bots come and go, so that a pass
        #: costs what its schedule has, not what its namespace has.
        self._bots: dict[str, dict[str, BotRef]] = {}
        self._owned: dict[Key, dict[str, BotRef]] = {}
        self._meetings: dict[str, dict[tuple[str, int], dict[str, BotRef]]] = {}
        self._passes: Passes[Key] = Passes(
            run=self._pass,
            concurrency=_CONCURRENT_PASSES,
            label=lambda key: "BotSchedule " + "/".join(key),
            known=self._entries.__contains__,
            log=log,
            idle=self._first_done,
        )
        self._counts = dict.fromkeys(PassCounts.__slots__, 0)
        #: Schedules known at start-up whose first pass has not finished yet, and when start-up began.
        self._first_pending: set[Key] = set()
        self._started = time.monotonic()
        self.first_plan_seconds: float | None = None

    @property
    def counts(self) -> PassCounts:
        return PassCounts(**self._counts)

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
        self._first_pending = {_key(body) for body in listed}
        if not self._first_pending:
            self.first_plan_seconds = 0.0
        for body in listed:
            self.schedule_event(None, body)

    # Watch events (from kopf) ---------------------------------------------------------------

    def schedule_event(self, kind: str | None, body: dict[str, Any]) -> None:
        key = _key(body)
        if kind == "DELETED":
            self._forget(key)  # the garbage collector deletes the children
            return
        entry = self._entries.setdefault(key, _Entry(key=key))
        if entry.body is not None and entry.body["metadata"].get("uid") != body["metadata"].get("uid"):
            self._forget(key)  # deleted and created again under the same name: a new schedule
            entry = self._entries.setdefault(key, _Entry(key=key))
        if entry.body is None or (_version(body) != _version(entry.body) and newer(body, entry.body)):
            entry.body = kept(body)
            self.poke(key)

    def bot_event(self, kind: str | None, body: dict[str, Any]) -> None:
        namespace, name = _key(body)
        before = self._bots.get(namespace, {}).get(name)
        if kind == "DELETED":
            if before is None or before.uid != body["metadata"].get("uid"):
                return
            after: BotRef | None = None
        else:
            after = observe_bot(body)
            if after == before:
                if before is not None and after.spec is not before.spec:
                    # The same for every plan, but the newest event's spec is the one the engine keeps:
                    # that one, not the start-up list's beside it (a spec dict and its strings: ~600 bytes a bot).
                    self._index(namespace, name, after)
                return  # nothing a plan reads has changed (the list at start-up, a status detail)
        self._index(namespace, name, after)
        if before is not None and before.schedule_name is not None:
            self.poke((namespace, before.schedule_name))
        if after is not None and after.schedule_name is not None:
            if before is None or after.schedule_name != before.schedule_name:
                self.poke((namespace, after.schedule_name))
        elif _matters_to_others(before, after):
            # A hand-written bot takes or frees a meeting slot: the duplicate rule of every schedule here.
            for key in [key for key in self._entries if key[0] == namespace]:
                self.poke(key)

    def _index(self, namespace: str, name: str, bot: BotRef | None) -> None:
        """Put `bot` (None: remove it) where the passes look it up."""
        bots = self._bots.setdefault(namespace, {})
        meetings = self._meetings.setdefault(namespace, {})
        before = bots.pop(name, None)
        if before is not None:
            if before.schedule_name is not None:
                self._owned.get((namespace, before.schedule_name), {}).pop(name, None)
            key = meeting_key(before)
            if key is not None and key in meetings:
                meetings[key].pop(name, None)
                if not meetings[key]:
                    del meetings[key]
        if bot is None:
            return
        bots[name] = bot
        if bot.schedule_name is not None:
            self._owned.setdefault((namespace, bot.schedule_name), {})[name] = bot
        key = meeting_key(bot)
        if key is not None:
            meetings.setdefault(key, {})[name] = bot

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
        namespace, _ = entry.key
        now = self._clock()
        schedule = observe_schedule(entry.body, extra_hosts=self._extra_hosts, parsed=self._parsed(entry))
        feed = await self._feed(entry, schedule, now)
        children = list(self._owned.get(entry.key, {}).values())
        meetings = self._meetings.get(namespace, {})
        if feed is not None:
            # Expanding a calendar may take a while: not on the loop that sends the joins (a copy
            # of the index: the loop may change it meanwhile).
            index = {key: dict(bots) for key, bots in meetings.items()}
            decision = await asyncio.to_thread(self._plan, schedule, children, now, feed, index)
        else:
            decision = self._plan(schedule, children, now, None, meetings)
        for action in decision.actions:
            try:
                await self._act(entry, action, now)
            except ApiError as error:
                if error.status not in _REFUSALS or not isinstance(action, CreateChild | PatchChild):
                    raise
                # Refused for good (a quota, a policy, the ScheduledBot webhook): said, not retried in a loop;
                # the next pass (an event, the next wake-up) tries again.
                name = action.body["metadata"]["name"] if isinstance(action, CreateChild) else action.name
                message = f"ScheduledBot {name} was refused by the API server: {error.message}"
                await self._say(entry, Emit(type=EventType.WARNING, reason="ChildRefused", message=message[:1024]), now)
        await self._publish(entry, decision)
        entry.fetch_at = decision.fetch_at
        self._wake(entry, min(filter(None, (decision.wake_at, decision.fetch_at)), default=None), now)

    def _parsed(self, entry: _Entry) -> ParsedSpec:
        assert entry.body is not None
        generation = int(entry.body["metadata"].get("generation") or 0)
        if entry.parsed is None or entry.parsed[0] != generation:
            entry.parsed = (generation, parse_schedule(entry.body, extra_hosts=self._extra_hosts))
        return entry.parsed[1]

    def _plan(
        self,
        schedule: ScheduleView,
        children: list[BotRef],
        now: datetime,
        feed: FeedState | None,
        meetings: MeetingIndex,
    ) -> SchedulePlan:
        return plan_schedule(
            schedule=schedule, bots=children, now=now, feed=feed, extra_hosts=self._extra_hosts, meetings=meetings
        )

    async def _feed(self, entry: _Entry, schedule: ScheduleView, now: datetime) -> FeedState | None:
        """The feed's state for an ical schedule, read first when it is due (or never read)."""
        source = schedule.spec.source if schedule.spec is not None else None
        if not isinstance(source, ValidICal) or schedule.deleted_at is not None:
            return None
        state = self._feeds.state(entry.key, source)
        assert entry.body is not None
        refresh = (entry.body["metadata"].get("annotations") or {}).get(REFRESH_ANNOTATION)
        if state is None or entry.fetch_at is None or entry.fetch_at <= now or refresh != entry.refresh:
            entry.refresh = refresh
            self._counts["feed_reads"] += 1
            state = await self._feeds.read(entry.key, schedule.namespace, source, now)
        return state

    def _wake(self, entry: _Entry, at: datetime | None, now: datetime) -> None:
        if at is None:
            self._passes.wake(entry.key, None, now)
            return
        # At least a moment later: a wake-up in the past must not turn into a pass that spins.
        self._passes.wake_in(entry.key, max((at - now).total_seconds(), 0.05))

    async def _publish(self, entry: _Entry, decision: SchedulePlan) -> None:
        assert entry.body is not None
        new = decision.status.model_dump(by_alias=True, exclude_none=True, mode="json")
        old = entry.body.get("status") or {}
        if new == old:
            return
        patch: dict[str, Any] = {k: None for k in old if k not in new} | new
        written = await self._kube.patch_schedule_status(*entry.key, patch)
        self._counts["status_writes"] += 1
        if written is not None and newer(written, entry.body):
            entry.body = kept(written)

    # Actions --------------------------------------------------------------------------------

    async def _act(self, entry: _Entry, action: ScheduleAction, now: datetime) -> None:
        namespace, schedule = entry.key
        bots = self._bots.get(namespace, {})
        match action:
            case CreateChild(body=body):
                name = body["metadata"]["name"]
                taken = bots.get(name)
                if taken is not None:
                    # Same name, not this schedule's child (the planner knows its own): never adopted.
                    await self._say(entry, Emit(type=EventType.WARNING, reason="NameTaken", message=_taken(name)), now)
                    return
                written = await self._kube.create_bot(namespace, dict(body))
                self._counts["creates"] += 1
                if written is not None:
                    self._index(namespace, name, observe_bot(written))
                    log.info("BotSchedule %s/%s created ScheduledBot %s", namespace, schedule, name)
            case PatchChild(name=name, uid=uid, spec=spec, annotations=annotations):
                written = await self._kube.patch_bot_spec(
                    namespace, name, uid=uid, spec=dict(spec), annotations=annotations
                )
                self._counts["patches"] += 1
                if written is not None:
                    self._index(namespace, name, observe_bot(written))
            case DeleteChild(name=name, uid=uid, reason=reason):
                await self._kube.delete_bot(namespace, name, uid=uid)
                self._counts["deletes"] += 1
                log.info("BotSchedule %s/%s deleted ScheduledBot %s: %s", namespace, schedule, name, reason)
                known = bots.get(name)
                if known is not None and known.uid == uid:
                    # Until the watch shows it gone, it is on its way out.
                    self._index(namespace, name, _deleting(known))
            case Emit():
                await self._say(entry, action, now)

    async def _say(self, entry: _Entry, event: Emit, now: datetime) -> None:
        said = (event.reason, event.message)
        if said in entry.said:
            return
        if len(entry.said) >= _SAID_LIMIT:
            entry.said.clear()
        entry.said.add(said)
        assert entry.body is not None
        log.info("BotSchedule %s/%s %s: %s", *entry.key, event.reason, event.message)
        self._counts["events"] += 1
        await self._kube.post_event(
            entry.body,
            type_=event.type.value,
            reason=event.reason,
            message=event.message,
            now=now,
            kind=BOT_SCHEDULE.kind,
        )

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


def _key(body: dict[str, Any]) -> Key:
    return str(body["metadata"]["namespace"]), str(body["metadata"]["name"])


def _taken(name: str) -> str:
    return (
        f"ScheduledBot {name} exists and was not created by this schedule: it is left alone and its "
        "occurrence gets no bot until it is renamed or deleted"
    )


def _deleting(bot: BotRef) -> BotRef:
    return replace(bot, deleting=True)


def _matters_to_others(before: BotRef | None, after: BotRef | None) -> bool:
    """Whether a hand-written bot's change can change another bot's duplicate verdict."""
    if before is None or after is None:
        return True
    return (before.meeting_url, before.join_at, before.deleting, before.state in TERMINAL_STATES) != (
        after.meeting_url,
        after.join_at,
        after.deleting,
        after.state in TERMINAL_STATES,
    )


def _version(body: dict[str, Any]) -> object:
    return body["metadata"].get("resourceVersion")
