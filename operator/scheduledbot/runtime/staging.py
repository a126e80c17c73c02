"""The engine's side of the stager (runtime/stager.py): each waiting bot's creation slot, and Pods becoming Ready."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from scheduledbot.api.models import BotState
from scheduledbot.core import pacing
from scheduledbot.core.model import BotView
from scheduledbot.runtime.cache import Key, Seen
from scheduledbot.runtime.clock import Clock
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.metrics import Metrics
from scheduledbot.runtime.stager import Stager
from scheduledbot.runtime.views import pod_ready, pod_seen
from scheduledbot.timestamps import parse_time


class Staging:
    def __init__(self, *, settings: Settings, metrics: Metrics, clock: Clock, poke: Callable[[Key], None]) -> None:
        self._settings: Final = settings
        self._metrics: Final = metrics
        self._clock: Final = clock
        self.stager: Stager[Key] = Stager(poke=poke, clock=clock)
        metrics.staging_pace.set_function(lambda: self.stager.rate)

    def slot(self, key: Key, seen: Seen, bot: BotView, now: datetime) -> tuple[datetime | None, datetime | None]:
        """The bot's paced creation slot (runtime/stager.py) and when its Pod is expected Ready."""
        spec, state = bot.spec, bot.status.state
        ready = self.stager.ready_seconds
        pod = pod_seen(seen)
        waiting = state in (None, BotState.SCHEDULED) and pod is None and bot.deleted_at is None
        if spec is None or not waiting:
            self.stager.done(key)
            if spec is None or state is not BotState.STAGED or pod is None or pod_ready(pod):
                return None, None
            created = pod["metadata"].get("creationTimestamp")
            at = parse_time(created) if created else None
            return None, pacing.expected_ready(now=now, created_at=at, ready_seconds=ready)
        lead = spec.staging_lead_seconds
        stage_at = spec.join_at - timedelta(
            seconds=self._settings.defaults.staging_lead_seconds if lead is None else lead
        )
        slot = self.stager.want(key, stage_at=stage_at, join_at=spec.join_at)
        return slot, pacing.expected_ready(now=now, created_at=slot or stage_at, ready_seconds=ready)

    def note_ready(self, key: Key, seen: Seen, pod: dict[str, Any]) -> None:
        """A Pod's watch event: its first Ready paces the next Pods and times the staging."""
        if seen.staged_seen or not pod_ready(pod):
            return
        seen.staged_seen = True
        created = pod["metadata"].get("creationTimestamp")
        ready_at = next(
            (
                c.get("lastTransitionTime")
                for c in (pod.get("status") or {}).get("conditions") or []
                if c.get("type") == "Ready"
            ),
            None,
        )
        seconds = None
        if created and ready_at:
            seconds = (parse_time(ready_at) - parse_time(created)).total_seconds()
            self._metrics.staging_time.observe(seconds)
        self.stager.ready(key, seconds=seconds, at=self._clock.time())

    def forget(self, key: Key) -> None:
        self.stager.forget(key)

    def close(self) -> None:
        self.stager.close()
