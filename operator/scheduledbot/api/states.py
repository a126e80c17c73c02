"""The lifecycle vocabulary: a bot's states and what started its join (`JoinedBy`, from the protocol).

A module of its own so that every API module (the ScheduledBot's spec and
status, its notifications) can speak of states without importing one another;
`scheduledbot.api.models` re-exports all of it.
"""

from __future__ import annotations

import enum
from typing import Final

from scheduledbot import protocol
from scheduledbot.protocol import JoinedBy


class BotState(enum.StrEnum):
    """Where a bot is in its lifecycle."""

    #: Accepted; waiting for stageAt.
    SCHEDULED = "scheduled"
    #: The bot Pod exists and is warming up or ready; waiting for joinAt.
    STAGED = "staged"
    JOINING = "joining"
    WAITING_ROOM = "waiting_room"
    JOINED = "joined"
    RECORDING = "recording"
    LEAVING = "leaving"
    ENDED = "ended"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """Nothing follows: the bot's Pod is gone or going."""
        return self in TERMINAL_STATES

    @property
    def in_meeting(self) -> bool:
        """The bot is joining, in, or leaving the meeting; deleting it makes it leave first."""
        return self in IN_MEETING_STATES

    @property
    def allows_reschedule(self) -> bool:
        """spec.joinAt and spec.meetingUrl may still change (the CRD's CEL rule enforces this)."""
        return self in RESCHEDULABLE_STATES


# The groups the bot reports in are the protocol's; a ScheduledBot adds only its own first two states.
TERMINAL_STATES: Final = frozenset(map(BotState, protocol.TERMINAL_STATES))
IN_MEETING_STATES: Final = frozenset(map(BotState, protocol.IN_MEETING_STATES))
RESCHEDULABLE_STATES: Final = frozenset({BotState.SCHEDULED, BotState.STAGED})

__all__ = ["IN_MEETING_STATES", "RESCHEDULABLE_STATES", "TERMINAL_STATES", "BotState", "JoinedBy"]
