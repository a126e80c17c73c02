"""The BotSchedule's decisions: `plan_schedule(schedule, bots, now, ...) -> SchedulePlan`.

How a pass works
================
As for ScheduledBot (`core.plan`): the runtime shows the planner the
BotSchedule, the ScheduledBots of its namespace and the feed's last read, with
`now` read once; the planner expands the source over the window
`[now - startingDeadlineSeconds, now + horizonSeconds)` and compares it with
the children. It returns the actions (create, patch, delete children; Events),
the status, and when to plan again. Everything is re-derived each pass, so a
restart or a lost event cannot leave a schedule half-done.

The rules, each one for a reason
================================
- Children already joining or in a meeting are never touched by the schedule
  (an edit, a cancellation or a vanished event leaves them be), with one
  exception the user opts into: `concurrencyPolicy: Replace`.
- A child not yet joining follows its source: a moved occurrence patches its
  joinAt (the ScheduledBot machinery turns that into a reschedule), a
  cancelled or vanished one is deleted, a template edit is patched in (a
  staged child whose meeting or template changed is deleted and created again:
  its Pod was built from the old spec).
- A feed that cannot be read or parsed deletes nothing: its last good copy
  still creates and moves children, nothing is deleted because of the source,
  and `SourceHealthy` says why.
- An occurrence later than `startingDeadlineSeconds` when the operator can
  act is never created; it is counted as missed, with one Event per pass that
  finds some. Of the occurrences of one meeting that began without a bot
  within the deadline, only the latest is created (it joins at once). An
  occurrence whose bot joined, ended or failed is *settled* and never
  created again, even after its child is pruned by the history limits
  (`status.settled` remembers it while it is in the window).
- No two active ScheduledBots in a namespace join the same meeting (normalized
  URL) at the same instant: a hand-written bot and a bot already in the
  meeting always win; between schedules, the one whose name sorts first.
- `suspend` deletes the children not yet staged and keeps the rest; resuming
  creates nothing past its deadline (those count as missed, as CronJob does).
- Wake-ups are computed: the next occurrence to enter the horizon, the next
  one to start (for `status.next`), a concurrency decision; for a feed, its
  poll interval. Never a fixed period.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from scheduledbot.api.models import IN_MEETING_STATES, TERMINAL_STATES, BotState, ConditionStatus
from scheduledbot.api.platforms import MeetingUrlError, normalize_meeting_url
from scheduledbot.api.schedule import (
    MAX_ACTIVE,
    MAX_NEXT,
    MAX_SETTLED,
    MAX_SKIPPED,
    BotScheduleStatus,
    BotTemplateSpec,
    ConcurrencyPolicy,
    NextOccurrence,
    ScheduleCondition,
    SettledOccurrence,
    SourceKind,
    ValidICal,
    ValidSchedule,
)
from scheduledbot.core.model import Emit, EventType
from scheduledbot.core.occurrences import Occurrence, expand
from scheduledbot.core.schedule_children import (
    BotRef,
    build_child,
    child_name,
    child_spec,
    occurrence_annotations,
)
from scheduledbot.core.schedule_model import (
    CreateChild,
    DeleteChild,
    FeedState,
    PatchChild,
    ScheduleAction,
    SchedulePlan,
    ScheduleView,
)
from scheduledbot.timestamps import format_time, parse_time

#: A child created for an occurrence that has begun joins this long after the pass (the webhook refuses a past joinAt).
LATE_JOIN_MARGIN: Final = timedelta(seconds=5)
#: A settled occurrence moved by less than this is still the same (clock skew, a calendar's rounding).
SAME_OCCURRENCE: Final = timedelta(seconds=60)
#: concurrencyPolicy is decided this long before the new occurrence's start, before its join can fire.
CONCURRENCY_DECISION: Final = timedelta(seconds=10)
#: Settled occurrences are remembered this long after they leave the window.
SETTLED_GRACE: Final = timedelta(hours=1)
#: At most this many occurrences have children at once (a one-minute cron with a 28-day horizon would have 40,320).
MAX_PLANNED: Final = 200
#: Occurrences counted as missed in one pass, at most (and said so).
MAX_MISSED_SCAN: Final = 10_000
#: The first retry after a failed feed read; doubled per failure, up to the poll interval.
FEED_RETRY: Final = timedelta(seconds=10)
#: How far beyond the horizon the next occurrence is looked for (for the wake-up), for cron and rrule.
_LOOKAHEAD: Final = timedelta(days=400)
_SECOND: Final = timedelta(seconds=1)
#: The child spec fields a schedule sets (joinAt is compared as an instant, not as text).
_TEMPLATE_FIELDS: Final = frozenset(field.alias or name for name, field in BotTemplateSpec.model_fields.items())


def plan_schedule(
    *,
    schedule: ScheduleView,
    bots: Sequence[BotRef],
    now: datetime,
    feed: FeedState | None = None,
    extra_hosts: frozenset[str] = frozenset(),
) -> SchedulePlan:
    """Decide one pass over a BotSchedule. Pure: no clock, no I/O.

    `bots` are the namespace's ScheduledBots (children and others); `feed` is
    the feed's state for an ical schedule; `extra_hosts` the operator's
    admin-allowed meeting hosts (for links found in events).
    """
    if schedule.deleted_at is not None:
        return SchedulePlan(status=schedule.status)  # the garbage collector deletes the children
    if schedule.spec is None:
        return _invalid(schedule, now)
    return _Pass(schedule, schedule.spec, bots, now, feed, extra_hosts).run()


def _invalid(schedule: ScheduleView, now: datetime) -> SchedulePlan:
    message = (schedule.spec_error or "invalid spec")[:1024]
    previous = schedule.status.conditions or []
    conditions = _conditions(
        previous,
        [
            ("Ready", False, "InvalidSpec", message),
            ("Reconciling", False, "InvalidSpec", message),
            ("Stalled", True, "InvalidSpec", message),
        ],
        schedule.generation,
        now,
    )
    actions: tuple[ScheduleAction, ...] = ()
    if not _was(previous, "Stalled", "InvalidSpec"):
        actions = (Emit(type=EventType.WARNING, reason="InvalidSpec", message=message),)
    status = schedule.status.model_copy(update={"conditions": conditions, "observed_generation": schedule.generation})
    return SchedulePlan(status=status, actions=actions)


class _Pass:
    """One pass: the working state of `plan_schedule` (built and dropped within the call)."""

    def __init__(
        self,
        schedule: ScheduleView,
        spec: ValidSchedule,
        bots: Sequence[BotRef],
        now: datetime,
        feed: FeedState | None,
        extra_hosts: frozenset[str],
    ) -> None:
        self.schedule = schedule
        self.spec = spec
        self.now = now
        self.feed = feed
        self.extra_hosts = extra_hosts
        self.children = {bot.name: bot for bot in bots if bot.schedule_uid == schedule.uid}
        self.lo = max(schedule.created_at, now - spec.starting_deadline)
        self.hi = now + spec.horizon
        self.is_feed = spec.kind is SourceKind.ICAL
        #: The source's occurrences are known (for a feed: it was read and parsed at least once).
        self.known = not self.is_feed or (feed is not None and feed.feed is not None)
        #: Deletions because of the source are allowed (a failing feed deletes nothing).
        self.healthy = self.known and (not self.is_feed or (feed is not None and feed.error is None))
        self.actions: list[ScheduleAction] = []
        self.deleted: set[str] = set()
        self.created: dict[str, Occurrence] = {}
        self.skips: dict[str, tuple[Occurrence, str]] = {}
        self.missed = 0
        self.wakes: list[datetime] = []
        self.settled = self._settled()
        # Active bots of the namespace by (meeting, second): duplicates are found in one lookup.
        self.meetings: dict[tuple[str, int], list[BotRef]] = {}
        for bot in bots:
            key = self._meeting_key(bot.meeting_url, bot.instant)
            if key is not None and not bot.deleting and bot.state not in TERMINAL_STATES:
                self.meetings.setdefault(key, []).append(bot)
        self.claimed: dict[tuple[str, int], str] = {}

    # -- the pass --------------------------------------------------------------------------------

    def run(self) -> SchedulePlan:
        window = self._expand(self.lo, self.hi, MAX_PLANNED + 1) if self.known else []
        window_end = window[MAX_PLANNED].start if len(window) > MAX_PLANNED else self.hi
        window = window[:MAX_PLANNED]
        superseded = self._superseded(window)
        self._count_missed(superseded)
        names = {}
        for occurrence in window:
            name = self._name(occurrence)
            names[name] = occurrence
            if name not in superseded:
                self._occurrence(occurrence, name)
        self._replace_earlier(window, names)
        self._unmatched(names, window_end)
        self._prune_history()
        self._wake_for_horizon(window_end, capped=window_end < self.hi)
        status = self._status(window, names)
        future = [moment for moment in self.wakes if moment > self.now]
        return SchedulePlan(
            status=status,
            actions=tuple(self.actions),
            wake_at=min(future, default=None),
            fetch_at=self._fetch_at(),
        )

    def _expand(self, start: datetime, end: datetime, limit: int) -> list[Occurrence]:
        return expand(
            self.spec,
            start=start,
            end=end,
            limit=limit,
            feed=self.feed.feed if self.feed is not None else None,
            extra_hosts=self.extra_hosts,
        )

    def _name(self, occurrence: Occurrence) -> str:
        return child_name(self.schedule.name, self.spec.kind, occurrence)

    # -- one occurrence --------------------------------------------------------------------------

    def _occurrence(self, occurrence: Occurrence, name: str) -> None:
        if self._is_settled(name, occurrence.start):
            return
        child = self.children.get(name)
        if child is not None and (child.deleting or child.state in IN_MEETING_STATES):
            return
        if child is not None and child.state in TERMINAL_STATES:
            if self.healthy and occurrence.start > self.now and not self._same(child.instant, occurrence.start):
                # Moved after its bot was done: the old child goes, the next pass creates the new one.
                self._delete(child, f"its occurrence moved to {format_time(occurrence.start)} after it ended")
            return
        if self.spec.suspend:
            self._skip(occurrence, name, "the schedule is suspended")
            if child is not None and child.state is not BotState.STAGED:
                self._delete(child, "the schedule is suspended")
            return
        url = self.spec.meeting_url or occurrence.meeting_url
        if url is None:
            self._skip(occurrence, name, "the event has no meeting link of a supported platform")
            return
        duplicate = self._duplicate(name, url, occurrence)
        if duplicate is not None:
            self._skip(occurrence, name, duplicate)
            if child is not None:
                self._delete(child, duplicate)
            return
        if self._concurrency_forbids(name, url, occurrence, child):
            return
        if child is None:
            body = build_child(
                name=self.schedule.name,
                namespace=self.schedule.namespace,
                uid=self.schedule.uid,
                schedule=self.spec,
                occurrence=occurrence,
                join_at=max(occurrence.start, self.now + LATE_JOIN_MARGIN),
            )
            self.actions.append(CreateChild(body=body))
            self.created[name] = occurrence
            return
        self._follow(child, occurrence)

    def _follow(self, child: BotRef, occurrence: Occurrence) -> None:
        """A child not yet joining: patched to its occurrence as the source now has it."""
        moved = child.occurrence != occurrence.start
        join_at = child.join_at
        if moved or join_at is None or join_at < occurrence.start:
            join_at = max(occurrence.start, self.now + LATE_JOIN_MARGIN)
        wanted = child_spec(self.spec, occurrence, join_at=join_at)
        # Fields this operator does not know (a newer CRD) are not ours to compare: they would be patched forever.
        changed = {
            key
            for key in (wanted.keys() | child.spec.keys()) & _TEMPLATE_FIELDS
            if wanted.get(key) != child.spec.get(key)
        }
        if not moved and not changed and join_at == child.join_at:
            return
        if changed and child.state is BotState.STAGED:
            if self.healthy:
                fields = ", ".join(sorted(changed))
                self._delete(child, f"re-planned while staged ({fields} changed): it is created again")
            return
        self.actions.append(
            PatchChild(name=child.name, uid=child.uid, spec=wanted, annotations=occurrence_annotations(occurrence))
        )

    def _duplicate(self, name: str, url: str, occurrence: Occurrence) -> str | None:
        """Why this occurrence must leave its meeting to another bot, if it must."""
        key = self._meeting_key(url, occurrence.start)
        if key is None:
            return None
        first = self.claimed.setdefault(key, name)
        if first != name:
            return f"duplicate of {first}: the same meeting at the same time"
        mine = (self.schedule.name, name)
        for other in self.meetings.get(key, ()):
            if other.name == name:
                continue
            owner = f"BotSchedule {other.schedule_name}" if other.schedule_name else "created by hand"
            if (
                other.schedule_name is None
                or other.state in IN_MEETING_STATES
                or (other.schedule_name, other.name) < mine
            ):
                return f"duplicate of ScheduledBot {other.name} ({owner}): the same meeting at the same time"
        return None

    def _concurrency_forbids(self, name: str, url: str, occurrence: Occurrence, child: BotRef | None) -> bool:
        """concurrencyPolicy Forbid: skip (and settle) an occurrence while an earlier bot is still in its meeting."""
        if self.spec.concurrency_policy is not ConcurrencyPolicy.FORBID or not self._earlier_running(url, occurrence):
            return False
        decide_at = occurrence.start - CONCURRENCY_DECISION
        if self.now < decide_at:
            self.wakes.append(decide_at)
            return False
        if child is not None:
            self._delete(child, "concurrencyPolicy Forbid: an earlier occurrence's bot is still in the meeting")
        self.settled[name] = occurrence.start
        self.missed += 1
        self.actions.append(
            Emit(
                type=EventType.WARNING,
                reason="ConcurrencyForbid",
                message=(
                    f"occurrence {format_time(occurrence.start)} skipped: an earlier occurrence's bot is still in "
                    "the meeting (concurrencyPolicy Forbid)"
                ),
            )
        )
        return True

    def _earlier_running(self, url: str, occurrence: Occurrence) -> list[BotRef]:
        meeting = self._normal(url)
        return [
            child
            for child in self.children.values()
            if child.state in IN_MEETING_STATES
            and not child.deleting
            and child.instant is not None
            and child.instant < occurrence.start
            and self._normal(child.meeting_url) == meeting
        ]

    def _replace_earlier(self, window: list[Occurrence], names: dict[str, Occurrence]) -> None:
        """concurrencyPolicy Replace: an earlier bot still in the meeting is deleted (it leaves) as the next starts."""
        if self.spec.concurrency_policy is not ConcurrencyPolicy.REPLACE or self.spec.suspend:
            return
        for name, occurrence in names.items():
            url = self.spec.meeting_url or occurrence.meeting_url
            if url is None or name in self.skips or self._is_settled(name, occurrence.start):
                continue
            earlier = self._earlier_running(url, occurrence)
            decide_at = occurrence.start - CONCURRENCY_DECISION
            if earlier and self.now < decide_at:
                self.wakes.append(decide_at)
            elif earlier and occurrence.start - self.now <= CONCURRENCY_DECISION:
                for child in earlier:
                    self._delete(child, f"concurrencyPolicy Replace: occurrence {format_time(occurrence.start)} starts")

    # -- children without an occurrence, history, missed ---------------------------------------

    def _unmatched(self, names: dict[str, Occurrence], window_end: datetime) -> None:
        for child in self.children.values():
            if child.name in names or child.deleting or child.state in IN_MEETING_STATES | TERMINAL_STATES:
                continue
            if self.spec.suspend and child.state is not BotState.STAGED:
                self._delete(child, "the schedule is suspended")
                continue
            occurrence = child.instant
            if not self.healthy or occurrence is None or occurrence < self.lo:
                continue  # a failing feed deletes nothing; a past child is the ScheduledBot machinery's
            if occurrence >= window_end and any(
                self._name(found) == child.name for found in self._expand(occurrence, occurrence + _SECOND, 2)
            ):
                continue  # beyond the horizon (it shrank): still in the source
            self._delete(child, "its occurrence is no longer in the source (cancelled, moved or removed)")

    def _prune_history(self) -> None:
        for state, limit in (
            (BotState.ENDED, self.spec.successful_history_limit),
            (BotState.FAILED, self.spec.failed_history_limit),
        ):
            done = [c for c in self.children.values() if c.state is state and not c.deleting]
            done.sort(key=lambda c: (c.ended_at or c.instant or datetime.min.replace(tzinfo=UTC), c.name), reverse=True)
            for child in done[limit:]:
                self._delete(child, "history limit", event=False)

    def _superseded(self, window: list[Occurrence]) -> dict[str, Occurrence]:
        """Occurrences that began without a bot and are followed by a later one that began, on the same meeting.

        Only the latest is created late (as CronJob runs only the latest missed
        time): bots for a minutely meeting's last five minutes would all join
        now. The others are missed, and settled so that they stay so.
        """
        if self.spec.suspend:
            return {}
        latest: dict[str | None, tuple[str, Occurrence]] = {}
        out: dict[str, Occurrence] = {}
        for occurrence in window:
            name = self._name(occurrence)
            if occurrence.start > self.now or name in self.children or self._is_settled(name, occurrence.start):
                continue
            meeting = self._normal(self.spec.meeting_url or occurrence.meeting_url)
            if meeting in latest:
                earlier, before = latest[meeting]
                out[earlier] = before
            latest[meeting] = (name, occurrence)
        for name, occurrence in out.items():
            self.settled[name] = occurrence.start
        return out

    def _count_missed(self, superseded: dict[str, Occurrence]) -> None:
        if self.spec.suspend or not self.known:
            return
        since = self.schedule.created_at
        planned = _parse(self.schedule.status.planned_through)
        if planned is not None:
            since = max(since, planned + _SECOND)
        missed = list(superseded.values())
        if since < self.lo:
            missed += [
                o
                for o in self._expand(since, self.lo, MAX_MISSED_SCAN)
                if self._name(o) not in self.children and not self._is_settled(self._name(o), o.start)
            ]
        missed.sort(key=lambda o: o.start)
        if not missed:
            return
        self.missed += len(missed)
        many = "at least " if len(missed) >= MAX_MISSED_SCAN else ""
        self.actions.append(
            Emit(
                type=EventType.WARNING,
                reason="MissedOccurrences",
                message=(
                    f"{many}{len(missed)} occurrence(s) from {format_time(missed[0].start)} to "
                    f"{format_time(missed[-1].start)} got no bot: they were more than startingDeadlineSeconds "
                    f"({int(self.spec.starting_deadline.total_seconds())} s) past when the operator could act"
                ),
            )
        )

    # -- bookkeeping -----------------------------------------------------------------------------

    def _delete(self, child: BotRef, reason: str, *, event: bool = True) -> None:
        if child.name in self.deleted:
            return
        self.deleted.add(child.name)
        self.actions.append(DeleteChild(name=child.name, uid=child.uid, reason=reason))
        if event:
            self.actions.append(
                Emit(
                    type=EventType.NORMAL, reason="DeletedChild", message=f"deleted ScheduledBot {child.name}: {reason}"
                )
            )

    def _skip(self, occurrence: Occurrence, name: str, reason: str) -> None:
        self.skips[name] = (occurrence, reason)
        before = {(s.name, s.skipped) for s in self.schedule.status.skipped or []}
        if reason.startswith("duplicate") and (name, reason) not in before:
            self.actions.append(
                Emit(
                    type=EventType.WARNING,
                    reason="DuplicateSkipped",
                    message=f"occurrence {format_time(occurrence.start)} gets no bot: {reason}",
                )
            )

    def _settled(self) -> dict[str, datetime]:
        keep_from = self.lo - SETTLED_GRACE
        out = {}
        for entry in self.schedule.status.settled or []:
            moment = _parse(entry.time)
            if moment is not None and moment >= keep_from:
                out[entry.name] = moment
        for child in self.children.values():
            if child.state in IN_MEETING_STATES | TERMINAL_STATES and child.instant is not None:
                out.setdefault(child.name, child.instant)
        return out

    def _is_settled(self, name: str, start: datetime) -> bool:
        return name in self.settled and self._same(self.settled[name], start)

    @staticmethod
    def _same(first: datetime | None, second: datetime) -> bool:
        return first is not None and abs(first - second) <= SAME_OCCURRENCE

    def _normal(self, url: str | None) -> str | None:
        if url is None:
            return None
        try:
            return normalize_meeting_url(url)
        except MeetingUrlError:
            return None

    def _meeting_key(self, url: str | None, instant: datetime | None) -> tuple[str, int] | None:
        normal = self._normal(url)
        if normal is None or instant is None:
            return None
        return normal, int(instant.timestamp())

    # -- wake-ups and status ---------------------------------------------------------------------

    def _wake_for_horizon(self, window_end: datetime, *, capped: bool) -> None:
        if not self.known or capped:
            return
        span = self.feed_interval or _LOOKAHEAD
        upcoming = self._expand(window_end, window_end + span, 1)
        if upcoming:
            self.wakes.append(max(upcoming[0].start - self.spec.horizon, self.now + _SECOND))

    @property
    def feed_interval(self) -> timedelta | None:
        source = self.spec.source
        return source.poll_interval if isinstance(source, ValidICal) else None

    def _fetch_at(self) -> datetime | None:
        interval = self.feed_interval
        if interval is None:
            return None
        feed = self.feed
        if feed is None or feed.attempted_at is None:
            return self.now
        if feed.error is not None:
            backoff: timedelta = FEED_RETRY * (1 << min(max(feed.failures - 1, 0), 20))
            return feed.attempted_at + min(interval, backoff)
        return (feed.fetched_at or feed.attempted_at) + interval

    def _status(self, window: list[Occurrence], names: dict[str, Occurrence]) -> BotScheduleStatus:
        previous = self.schedule.status
        child_of = {name for name, child in self.children.items() if name not in self.deleted} | set(self.created)
        upcoming = []
        for occurrence in window:
            if occurrence.start < self.now:
                continue
            name = self._name(occurrence)
            self.wakes.append(occurrence.start)
            skip = self.skips.get(name)
            upcoming.append(
                NextOccurrence(
                    time=format_time(occurrence.start),
                    name=name if name in child_of else None,
                    skipped=skip[1] if skip else None,
                )
            )
            if len(upcoming) == MAX_NEXT:
                break
        skipped = [
            NextOccurrence(time=format_time(occurrence.start), name=name, skipped=reason)
            for name, (occurrence, reason) in sorted(self.skips.items(), key=lambda item: item[1][0].start)
        ][:MAX_SKIPPED]
        active = sorted(
            (c for c in self.children.values() if c.state not in TERMINAL_STATES and c.name not in self.deleted),
            key=lambda c: (c.instant or datetime.min.replace(tzinfo=UTC), c.name),
        )
        active_names = [c.name for c in active] + sorted(self.created, key=lambda n: self.created[n].start)
        begun = [c.instant for c in self.children.values() if c.instant is not None and c.instant <= self.now]
        begun += [moment for moment in self.settled.values() if moment <= self.now]
        last = max([*begun, *filter(None, [_parse(previous.last_schedule_time)])], default=None)
        settled = sorted(self.settled.items(), key=lambda item: (item[1], item[0]))[-MAX_SETTLED:]
        planned = _parse(previous.planned_through)
        if window and not self.spec.suspend:
            planned = max(filter(None, [planned, window[-1].start]))
        return previous.model_copy(
            update={
                "source": self.spec.describe(),
                "next": upcoming or None,
                "active": active_names[:MAX_ACTIVE] or None,
                "active_count": len(active_names),
                "last_schedule_time": format_time(last) if last else None,
                "last_sync_time": _format(self.feed.fetched_at) if self.feed is not None else None,
                "missed_count": (previous.missed_count or 0) + self.missed,
                "skipped": skipped or None,
                "settled": [SettledOccurrence(name=name, time=format_time(moment)) for name, moment in settled] or None,
                "planned_through": _format(planned),
                "observed_generation": self.schedule.generation,
                "conditions": self._conditions(),
            }
        )

    def _conditions(self) -> list[ScheduleCondition]:
        wanted: list[tuple[str, bool | None, str, str]] = []
        feed = self.feed
        if self.spec.suspend:
            ready = (True, "Suspended", "suspended: no new bots; staged and running ones are kept")
        elif feed is not None and feed.error is not None and self.is_feed:
            ready = (False, "SourceUnhealthy", f"the feed cannot be read: {feed.error}")
        elif not self.known:
            ready = (False, "WaitingForFeed", "the feed has not been read yet")
        else:
            ready = (True, "Scheduled", "bots are created ahead of each occurrence")
        stalled = ready[1] == "SourceUnhealthy"
        wanted += [
            ("Ready", ready[0], ready[1], ready[2]),
            ("Reconciling", ready[1] == "WaitingForFeed", ready[1], ready[2]),
            ("Stalled", stalled, ready[1], ready[2]),
        ]
        if self.is_feed:
            if feed is None or feed.attempted_at is None:
                wanted.append(("SourceHealthy", None, "NotRead", "the feed has not been read yet"))
            elif feed.error is not None:
                wanted.append(("SourceHealthy", False, "ReadFailed", feed.error))
            else:
                wanted.append(("SourceHealthy", True, "Read", "the feed was read and parsed"))
        previous = self.schedule.status.conditions or []
        conditions = _conditions(previous, wanted, self.schedule.generation, self.now)
        if stalled and not _was(previous, "Stalled", "SourceUnhealthy"):
            self.actions.append(Emit(type=EventType.WARNING, reason="SourceUnhealthy", message=ready[2][:1024]))
        return conditions


def _conditions(
    previous: Sequence[ScheduleCondition],
    wanted: Sequence[tuple[str, bool | None, str, str]],
    generation: int,
    now: datetime,
) -> list[ScheduleCondition]:
    """Conditions whose lastTransitionTime moves only when their status flips."""
    earlier = {condition.type: condition for condition in previous}
    out = []
    for type_, value, reason, message in wanted:
        status = ConditionStatus.UNKNOWN if value is None else ConditionStatus.TRUE if value else ConditionStatus.FALSE
        before = earlier.get(type_)
        since = before.last_transition_time if before is not None and before.status == status else format_time(now)
        out.append(
            ScheduleCondition(
                type=type_,
                status=status,
                observed_generation=generation,
                last_transition_time=since,
                reason=reason,
                message=message[:1024],
            )
        )
    return out


def _was(conditions: Sequence[ScheduleCondition], type_: str, reason: str) -> bool:
    return any(c.type == type_ and c.status == ConditionStatus.TRUE and c.reason == reason for c in conditions)


def _parse(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


def _format(moment: datetime | None) -> str | None:
    return format_time(moment) if moment is not None else None


__all__ = ["plan_schedule"]
