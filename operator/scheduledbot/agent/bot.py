"""The Python API for bots: subclass :class:`Bot`, report states with its reporter.

A bot is three coroutines:

``prepare()``
    Warm-up before the join signal (open connections, launch a browser, load
    models). The Pod reports ready only after it returns, so the operator's
    join never waits on warm-up. Optional.
``join(meeting)``
    The whole session: join, stay, and return once out of the meeting (after
    a leave was asked for, or because the meeting ended). Report progress with
    ``await self.reporter.report("joined")`` etc. Returning means ``ended``
    (unless the bot reported ``failed`` itself); raising :class:`BotFailure`
    means ``failed`` with its reason; any other exception means ``failed``
    with reason ``BotFailed``.
``leave(reason)``
    Ask the session to end: make ``join()`` return soon. The default sets
    :attr:`Bot.leave_requested`, which ``join()`` can await. The agent gives
    ``leave()`` plus the end of ``join()`` :attr:`Bot.leave_timeout` seconds,
    then cancels ``join()``.

The agent (see :mod:`scheduledbot.agent.runtime`) calls these; a bot never
talks to the operator itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduledbot.agent.state import StateHolder
from scheduledbot.protocol import REPORTABLE_STATES, BotState, JoinedBy

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Meeting:
    """The meeting a bot joins: from the join request, else from the Pod's environment."""

    url: str
    bot_name: str | None = None
    join_at: float | None = None  # epoch seconds, the scheduled join instant
    config: Mapping[str, Any] = field(default_factory=dict)  # BOT_CONFIG
    request_id: str | None = None  # the operator's join request id; None when joined by deadline
    joined_by: JoinedBy = JoinedBy.SIGNAL


class BotFailure(Exception):
    """Raise from ``join()`` to fail with a machine-readable reason (CamelCase) and a message."""

    def __init__(self, reason: str, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.exit_code = exit_code


class StateReporter:
    """How a bot reports its own states; the agent owns ``ready`` and ``joining``."""

    def __init__(self, holder: StateHolder) -> None:
        self._holder = holder

    async def report(
        self,
        state: BotState,
        message: str = "",
        *,
        reason: str | None = None,
        exit_code: int | None = None,
    ) -> bool:
        """Report ``state``; True if it was taken, False if it lost a race (e.g. to a leave).

        Async so that bots need not change when reporting gains I/O, and so that
        the long-pollers woken by the change get a chance to answer right away.
        """
        if state not in REPORTABLE_STATES:
            raise ValueError(f"a bot cannot report {state!r}; it may report {sorted(REPORTABLE_STATES)}")
        changed = self._holder.transition(state, message=message, reason=reason, exit_code=exit_code)
        await asyncio.sleep(0)
        return changed


class Bot:
    """Base class of a bot run by the agent. Override ``join()``; the rest is optional."""

    #: Seconds the agent waits for ``leave()`` and the end of ``join()`` before
    #: cancelling ``join()``. Below Kubernetes' default 30 s termination grace
    #: period, so that a SIGTERM-triggered leave finishes before the SIGKILL.
    leave_timeout: float = 20.0

    def __init__(self) -> None:
        self.leave_requested = asyncio.Event()
        self._reporter: StateReporter | None = None

    @property
    def reporter(self) -> StateReporter:
        if self._reporter is None:
            raise RuntimeError("the bot is not attached to an agent yet")
        return self._reporter

    def attach(self, reporter: StateReporter) -> None:
        """Called by the agent before ``prepare()``."""
        self._reporter = reporter

    async def prepare(self) -> None:
        """Warm up before the join signal; the Pod is ready once this returns."""

    async def join(self, meeting: Meeting) -> None:
        """Join ``meeting`` and stay until out of it; see the module docstring."""
        raise NotImplementedError

    async def leave(self, reason: str) -> None:
        """Ask ``join()`` to leave the meeting and return."""
        logger.info("Leaving the meeting: %s.", reason)
        self.leave_requested.set()
