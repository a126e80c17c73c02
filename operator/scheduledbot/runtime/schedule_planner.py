"""What a BotSchedule's pass sees and decides: its parsed spec, its feed (read when due), `plan_schedule`."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Final

from scheduledbot.api.schedule import ValidICal
from scheduledbot.core.schedule_children import BotRef
from scheduledbot.core.schedule_model import (
    FeedState,
    ParsedSpec,
    SchedulePlan,
    ScheduleView,
    observe_schedule,
    parse_schedule,
)
from scheduledbot.core.schedule_plan import MeetingIndex, plan_schedule
from scheduledbot.runtime.schedule_feeds import FeedReader
from scheduledbot.runtime.schedule_index import BotIndex
from scheduledbot.runtime.schedule_publisher import ScheduleEntry

#: Set or change this annotation on a BotSchedule to have its feed read now (after fixing its Secret, say).
REFRESH_ANNOTATION: Final = "meetingbots.dev/refresh"


class SchedulePlanner:
    def __init__(
        self, *, feeds: FeedReader, bots: BotIndex, extra_meeting_hosts: frozenset[str], counts: Counter[str]
    ) -> None:
        self._feeds: Final = feeds
        self._bots: Final = bots
        self._extra_hosts: Final = extra_meeting_hosts
        self._counts: Final = counts

    async def plan(self, entry: ScheduleEntry, now: datetime) -> SchedulePlan:
        """The decision of `entry`'s pass at `now`."""
        assert entry.body is not None
        namespace, _ = entry.key
        schedule = observe_schedule(entry.body, extra_hosts=self._extra_hosts, parsed=self._parsed(entry))
        feed = await self._feed(entry, schedule, now)
        children = self._bots.children(entry.key)
        meetings = self._bots.meetings(namespace)
        if feed is not None:
            # Expanding a calendar may take a while: not on the loop that sends the joins (a copy
            # of the index: the loop may change it meanwhile).
            index = {key: dict(bots) for key, bots in meetings.items()}
            return await asyncio.to_thread(self._plan, schedule, children, now, feed, index)
        return self._plan(schedule, children, now, None, meetings)

    def _parsed(self, entry: ScheduleEntry) -> ParsedSpec:
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

    async def _feed(self, entry: ScheduleEntry, schedule: ScheduleView, now: datetime) -> FeedState | None:
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
