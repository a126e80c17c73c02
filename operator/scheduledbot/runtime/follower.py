"""The bots' own reports: one state long-poll per followed bot, an event source of the engine.

A pass says which address to follow (`Decision.follow`); the follower keeps one
request open there, answered by the bot on change, and tells the engine
(`changed`) when a newer report or a lasting failure is to be seen by a pass, as
the join dispatcher does with its outcomes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Protocol

from scheduledbot.adapters.bots import BotUnreachable
from scheduledbot.core.model import BotReport
from scheduledbot.runtime.cache import Key
from scheduledbot.runtime.executor import BACKOFF

log = logging.getLogger(__name__)

#: Reads of the bot's state that fail in a row before the failure is shown to `plan`
#: (which may then judge a bot past its deadline Missed): three tries over about 0.7 s.
_STATE_FAILURES_TO_REPORT = 3


class StatePort(Protocol):
    """The part of adapters.bots.BotClient that reads a bot's state."""

    async def state(self, address: str, token: str, *, after: int) -> BotReport: ...


@dataclass(slots=True)
class _Followed:
    address: str | None = None
    task: asyncio.Task[None] | None = None
    #: The newest report of the bot's (from the long-poll or a join's answer).
    report: BotReport | None = None
    #: Why the last read of the bot's state failed (None once one succeeds).
    error: str | None = None


class Follower:
    def __init__(
        self,
        *,
        bots: StatePort,
        token: Callable[[Key], str | None],
        changed: Callable[[Key], None],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
    ) -> None:
        """`token` is the bot's bearer token (None once the bot is gone); `changed` asks for a pass."""
        self._bots: Final = bots
        self._token: Final = token
        self._changed: Final = changed
        self._spawn: Final = spawn
        self._followed: Final[dict[Key, _Followed]] = {}

    def report(self, key: Key) -> BotReport | None:
        followed = self._followed.get(key)
        return followed.report if followed is not None else None

    def error(self, key: Key) -> str | None:
        followed = self._followed.get(key)
        return followed.error if followed is not None else None

    def take(self, key: Key, report: BotReport) -> None:
        """A report of the bot's, kept if it is newer than the one kept."""
        _take(self._followed.setdefault(key, _Followed()), report)

    def lost(self, key: Key) -> None:
        """The bot's Pod is gone, and what it reported with it."""
        followed = self._followed.get(key)
        if followed is not None:
            followed.report = None

    def follow(self, key: Key, address: str | None) -> None:
        """Follow the bot at `address` (None: none), unless it is followed there already."""
        if address is None and key not in self._followed:
            # Every pass says whom to follow; a bot waiting in `scheduled` has no one to follow
            # and no report yet: no record for it (bench/memory.py: about 90 bytes per waiting bot).
            return
        followed = self._followed.setdefault(key, _Followed())
        if address == followed.address:
            return
        if followed.task is not None:
            followed.task.cancel()
            followed.task = None
        followed.address = address
        followed.error = None
        if address is not None:
            followed.task = self._spawn(self._follow(key, followed, address))

    def forget(self, key: Key) -> None:
        followed = self._followed.pop(key, None)
        if followed is not None and followed.task is not None:
            followed.task.cancel()

    async def _follow(self, key: Key, followed: _Followed, address: str) -> None:
        """Long-poll the bot's state: one request open per bot, answered on change."""
        failures = 0
        while True:
            token = self._token(key)
            if token is None:
                return
            after = followed.report.version if followed.report is not None else 0
            try:
                report = await self._bots.state(address, token, after=after)
            except BotUnreachable as error:
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                failures += 1
                log.debug("state of %s unavailable (%s); again in %.1f s", address, error, delay)
                if failures == _STATE_FAILURES_TO_REPORT:
                    # Not the first failure: one lost connection must not make a verdict.
                    followed.error = str(error)
                    self._changed(key)
                await asyncio.sleep(delay)
                continue
            failures = 0
            followed.error = None
            if report.version != after:
                _take(followed, report)
                self._changed(key)


def _take(followed: _Followed, report: BotReport) -> None:
    if followed.report is None or report.version > followed.report.version:
        followed.report = report
