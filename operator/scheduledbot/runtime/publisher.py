"""What a pass says: the bot's status (one merge patch, only when it changed) and its Events."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Final

from scheduledbot.adapters.kube import Kube
from scheduledbot.api.models import ScheduledBotStatus
from scheduledbot.core.merge_patch import merge_patch
from scheduledbot.core.model import Emit
from scheduledbot.core.plan import LATE_STAGING
from scheduledbot.runtime.cache import Cache, Key, Seen
from scheduledbot.runtime.events import EventSink
from scheduledbot.runtime.executor import Memory
from scheduledbot.runtime.metrics import Metrics

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, *, kube: Kube, metrics: Metrics) -> None:
        self._kube: Final = kube
        self._metrics: Final = metrics
        self._events: Final = EventSink(kube)

    async def publish(self, key: Key, seen: Seen, status: ScheduledBotStatus) -> None:
        assert seen.body is not None
        new = status.model_dump(by_alias=True, exclude_none=True, mode="json")
        old = seen.body.get("status") or {}
        if new == old:
            return
        patch = merge_patch(old, new)
        namespace, name = key
        written = await self._kube.patch_status(namespace, name, patch)
        Cache.wrote(seen, written)
        self._metrics.status_writes.inc()

    def say(self, key: Key, seen: Seen, memory: Memory, emit: Emit, now: datetime) -> None:
        """An Event leaves after the pass's status, in the background (runtime/events.py)."""
        if (emit.reason, emit.message) in memory.said or seen.body is None:
            return
        memory.said += ((emit.reason, emit.message),)
        if emit.reason == LATE_STAGING:
            self._metrics.late_staging.inc()
        log.info("%s/%s %s: %s", *key, emit.reason, emit.message)
        self._events.emit(seen.body, type_=emit.type.value, reason=emit.reason, message=emit.message, now=now)

    async def close(self) -> None:
        await self._events.close()
