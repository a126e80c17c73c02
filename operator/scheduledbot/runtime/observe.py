"""The first step of a pass: what `core.plan` is to see of a bot, gathered from who keeps it.

The picture (runtime/cache.py, mapped by runtime/views.py), the executor's memory of
refusals, the bot's own reports (runtime/follower.py), its creation slot
(runtime/staging.py) and the defaults of its class.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from scheduledbot.core.model import BotView, Defaults, Observed
from scheduledbot.runtime.cache import Key, Seen
from scheduledbot.runtime.classes import ClassCatalog
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.executor import Memory
from scheduledbot.runtime.follower import Follower
from scheduledbot.runtime.staging import Staging
from scheduledbot.runtime.views import bot_view, class_limited, parsed_spec, pod_seen, pod_view

Staged = tuple[datetime | None, datetime | None]


class Observer:
    def __init__(self, *, settings: Settings, classes: ClassCatalog, follower: Follower, staging: Staging) -> None:
        self._settings: Final = settings
        self._classes: Final = classes
        self._follower: Final = follower
        self._staging: Final = staging

    def bot(self, seen: Seen) -> BotView:
        """The bot of a kept entry (its body must be known); its parsed spec kept beside it."""
        assert seen.body is not None
        view = bot_view(seen.body, extra_hosts=self._settings.extra_meeting_hosts, parsed=seen.spec)
        if seen.spec is None or (seen.spec.uid, seen.spec.generation) != (view.uid, view.generation):
            seen.spec = parsed_spec(view)
        return view

    def defaults(self, bot: BotView) -> Defaults:
        """The operator's defaults, cut to the limits of the bot's class."""
        return class_limited(self._settings.defaults, bot, self._classes.snapshot())

    def observe(self, key: Key, seen: Seen, memory: Memory, bot: BotView, now: datetime) -> Observed:
        return self._observed(key, seen, memory, bot, self._staging.slot(key, seen, bot, now))

    def changed(self, key: Key, seen: Seen, memory: Memory, bot: BotView, observed: Observed) -> bool:
        """Would the next pass see anything this one did not? (Only asked when a pass wants "now".)"""
        if seen.body is None:
            return True
        after = self.bot(seen)
        staging = (observed.stage_by, observed.ready_expected_at)
        return after != bot or self._observed(key, seen, memory, after, staging) != observed

    def _observed(self, key: Key, seen: Seen, memory: Memory, bot: BotView, staging: Staged) -> Observed:
        stage_by, ready_expected_at = staging
        return Observed(
            pod=pod_view(pod_seen(seen), bot.uid),
            secret=seen.secret,
            report=self._follower.report(key),
            signal=seen.signal,
            rejection=memory.rejection,
            rejection_reason=memory.rejection_reason,
            state_error=self._follower.error(key),
            stage_by=stage_by,
            ready_expected_at=ready_expected_at,
        )
