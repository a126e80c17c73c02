"""What a BotSchedule's pass says: its status (a merge patch, only when it changed) and its Events, each once.

Beside it, `ScheduleEntry`: one BotSchedule as the controller keeps it between passes.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from scheduledbot.adapters.kube import Kube
from scheduledbot.api.resource import BOT_SCHEDULE
from scheduledbot.api.schedule import BotScheduleStatus
from scheduledbot.core.model import Emit
from scheduledbot.core.schedule_model import ParsedSpec
from scheduledbot.runtime.cache import kept, newer
from scheduledbot.runtime.schedule_index import Key

log = logging.getLogger(__name__)

#: Events remembered per schedule so that a repeated pass does not post the same one again.
_SAID_LIMIT: Final = 256


@dataclass(slots=True)
class ScheduleEntry:
    key: Key
    body: dict[str, Any] | None = None
    #: When the feed is to be read next (the last plan's `fetch_at`).
    fetch_at: datetime | None = None
    #: The refresh annotation's value at the last read.
    refresh: str | None = None
    said: set[tuple[str, str]] = field(default_factory=set)
    #: The spec of generation `parsed[0]`, parsed once (a pass for a child's event does not parse it again).
    parsed: tuple[int, ParsedSpec] | None = None


class SchedulePublisher:
    def __init__(self, *, kube: Kube, counts: Counter[str]) -> None:
        self._kube: Final = kube
        self._counts: Final = counts

    async def publish(self, entry: ScheduleEntry, status: BotScheduleStatus) -> None:
        assert entry.body is not None
        new = status.model_dump(by_alias=True, exclude_none=True, mode="json")
        old = entry.body.get("status") or {}
        if new == old:
            return
        patch: dict[str, Any] = {k: None for k in old if k not in new} | new
        written = await self._kube.patch_schedule_status(*entry.key, patch)
        self._counts["status_writes"] += 1
        if written is not None and newer(written, entry.body):
            entry.body = kept(written)

    async def say(self, entry: ScheduleEntry, event: Emit, now: datetime) -> None:
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
