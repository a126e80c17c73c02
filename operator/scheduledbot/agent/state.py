"""The bot's state holder: one document, a version counter, and long-poll waiters.

Why it looks like this
======================

Every change replaces an immutable :class:`StateDoc` and bumps its version.
Changes are synchronous (no ``await``): the join handler transitions to
``joining`` and answers with the new document in the same step of the event
loop, so the operator's join request is answered without waiting on anything.

Long-poll waiters wait on an :class:`asyncio.Event` that is set and replaced
on every change: a waiter wakes exactly when something changed, never on a
timer tick, and a change that happens between two polls is not lost because
the caller passes the last version it saw (``after``).

Which transitions are allowed is decided by :func:`allowed`, a pure function:
``ended`` and ``failed`` are final; ``ready`` is only left by joining, by
leaving before the join (``ended``) or by failing; once ``leaving``, only the
end can follow. Refused transitions are not errors: a bot that reports
``joined`` just after the operator asked it to leave lost a race, nothing more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from scheduledbot.protocol import IN_MEETING_STATES, TERMINAL_STATES, BotState, JoinedBy, StateDoc

logger = logging.getLogger(__name__)


def allowed(current: BotState, new: BotState) -> bool:
    """Whether the state may move from ``current`` to ``new`` (same state: a message update)."""
    if current in TERMINAL_STATES:
        return False
    if current == "ready":
        return new in ("joining", "ended", "failed")
    if current == "leaving":
        return new in ("leaving", "ended", "failed")
    # joining, waiting_room, joined, recording: anything but going back to ready/joining.
    return new != "ready" and not (new == "joining" and current != "joining")


class StateHolder:
    """Holds the current :class:`StateDoc` and wakes long-pollers on each change."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._doc = StateDoc(version=1, state="ready", since=clock())
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def doc(self) -> StateDoc:
        return self._doc

    def transition(
        self,
        state: BotState,
        *,
        message: str = "",
        reason: str | None = None,
        exit_code: int | None = None,
        joined_by: JoinedBy | None = None,
        request_id: str | None = None,
    ) -> bool:
        """Move to ``state`` if allowed; True when the document changed.

        ``joined_by``/``request_id`` are kept from the join onwards: they say how
        this bot's single join happened, whatever state it is in later.
        A repeat of the current state with the same message and reason is not a
        change (no version bump, no wake-up).
        """
        current = self._doc
        if not allowed(current.state, state):
            logger.info("Ignored a transition from %s to %s.", current.state, state)
            return False
        new = dataclasses.replace(
            current,
            state=state,
            message=message,
            reason=reason,
            exit_code=exit_code,
            joined_by=joined_by if joined_by is not None else current.joined_by,
            request_id=request_id if request_id is not None else current.request_id,
        )
        if new == current:
            return False
        self._doc = dataclasses.replace(new, version=current.version + 1, since=self._clock())
        logger.info(
            "State %s -> %s (version %d)%s%s.",
            current.state,
            state,
            self._doc.version,
            f", reason {reason}" if reason else "",
            f": {message}" if message else "",
        )
        self._wake()
        return True

    @property
    def may_leave(self) -> bool:
        """Joining or in the meeting and not leaving yet: a leave has something to do."""
        return self._doc.state in IN_MEETING_STATES and self._doc.state != "leaving"

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_after(self, after: int, timeout: float | None) -> StateDoc:
        """The document once its version exceeds ``after``, or the current one after ``timeout``.

        ``timeout=None`` waits without a limit. Also returns early when the holder
        is closed, so that a server shutting down answers its long-polls instead
        of holding the Pod's exit for them.
        """
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while self._doc.version <= after and not self._closed:
            changed = self._changed
            try:
                async with asyncio.timeout_at(deadline):
                    await changed.wait()
            except TimeoutError:
                break
        return self._doc

    def close(self) -> None:
        """Release all long-pollers now (they answer with the current document)."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
