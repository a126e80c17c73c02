"""What `plan` reads and what it returns: plain frozen values, no I/O.

Why separate types
==================
The runtime gathers everything a decision needs (the ScheduledBot, its Pod, the
bot's own report, the join dispatcher's outcome) into these values before calling
`core.plan`, so the decision is a pure function of its arguments and `now`. Table
tests build them directly; nothing here knows about kopf, HTTP or the clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from scheduledbot.api.models import (
    JoinedBy,
    ScheduledBotStatus,
    ValidSpec,
)
from scheduledbot.protocol import DEFAULT_CONTROL_PORT

#: The recommended minimum lead time: a shorter lead is accepted, staged at once, and flagged.
MIN_RECOMMENDED_LEAD_SECONDS: Final = 120

#: How long a deleted ScheduledBot that is in a meeting waits for its bot to leave.
LEAVE_TIMEOUT_SECONDS: Final = 30

#: After a failed join signal, the next attempt (until the join deadline).
SIGNAL_RETRY_SECONDS: Final = 1.0

#: A Pod marked for deletion is gone when its watch event says so; should that event be
#: lost, the next look is this long after the Pod's own deletion deadline.
POD_GONE_RECHECK_SECONDS: Final = 5.0

#: Finalizer held only while a bot is in a meeting, so that deleting it makes the
#: bot leave first. Scheduled and staged bots carry none: deleting them is instant,
#: and the garbage collector removes their Pod and Secret.
FINALIZER: Final = "meetingbots.dev/leave-meeting"


@dataclass(frozen=True, slots=True, kw_only=True)
class Defaults:
    """Operator-wide defaults for the optional spec fields."""

    staging_lead_seconds: int = 300
    join_deadline_seconds: int = 120
    max_duration_seconds: int = 4 * 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class BotView:
    """The ScheduledBot as the API server last showed it."""

    name: str
    namespace: str
    uid: str
    generation: int
    created_at: datetime
    deleted_at: datetime | None
    has_finalizer: bool
    spec: ValidSpec | None
    #: Set instead of `spec` when the spec does not parse (the webhook was bypassed).
    spec_error: str | None
    status: ScheduledBotStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class PodView:
    """The bot Pod as the last watch event showed it."""

    name: str
    uid: str
    phase: str
    ready: bool
    ip: str | None
    deleting: bool
    #: The container port named `control` (bot protocol), the default unless the template says otherwise.
    control_port: int = DEFAULT_CONTROL_PORT
    waiting_reason: str | None = None
    waiting_message: str | None = None
    exit_code: int | None = None
    #: When the bot's container ended (a terminated container), if it did.
    finished_at: datetime | None = None
    #: The join time the Pod was created for (its join-at annotation).
    join_at: datetime | None = None
    #: The meeting the Pod was created for (its MEETING_URL).
    meeting_url: str | None = None
    #: A deleting Pod's deletion deadline (metadata.deletionTimestamp: the end of its grace period).
    gone_by: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True, slots=True, kw_only=True)
class BotReport:
    """The bot's own state document (bot protocol v1), as last received."""

    version: int
    state: str
    since: datetime | None
    message: str = ""
    reason: str | None = None
    joined_by: JoinedBy | None = None
    exit_code: int | None = None
    #: When the bot started its join (by the signal or its own deadline), by its own clock.
    join_started_at: datetime | None = None

    @property
    def in_meeting_or_after(self) -> bool:
        return self.state not in ("ready", "")


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalOutcome:
    """What the join dispatcher saw when it signalled the bot."""

    join_at: datetime
    #: When the request's bytes were written to the bot's connection.
    sent_at: datetime | None
    error: str | None
    report: BotReport | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    pod: PodView | None
    secret: bool
    report: BotReport | None = None
    signal: SignalOutcome | None = None
    #: The API server refused to create the bot Pod (a bad template, Pod Security): its message.
    rejection: str | None = None
    #: Why the bot's state could not be read, when its last read failed.
    state_error: str | None = None
    #: Set when the operator itself refused to build or adopt the Pod (`core.botpod`'s reasons,
    #: `NameConflict`): the status reason, with `rejection` the whole message.
    rejection_reason: str | None = None
    #: Paced staging (core/pacing.py): when this bot's Pod is to be created, if earlier than its
    #: stageAt; None: at its stageAt.
    stage_by: datetime | None = None
    #: When the bot Pod is expected Ready (not Ready yet); later than joinAt: warn before joinAt.
    ready_expected_at: datetime | None = None


class EventType(enum.StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


# Actions: what the runtime must do through the adapters. Each is idempotent, so
# that repeating a pass (a restart, a duplicate watch event) never duplicates work.


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateSecret:
    """Create the per-bot token Secret (AlreadyExists is success)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatePod:
    """Create the bot Pod for this join time (AlreadyExists is success)."""

    join_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class DeletePod:
    uid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ArmJoin:
    """Signal the bot at `join_at` (at once if that has passed)."""

    join_at: datetime
    address: str
    request_id: str
    #: After a failed attempt: not before this instant (the retry back-off).
    not_before: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DisarmJoin:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class MoveSelfJoin:
    """Tell a kept, staged bot its new join time (its self-join safety net moves)."""

    join_at: datetime
    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Leave:
    address: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AddFinalizer:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveFinalizer:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Emit:
    type: EventType
    reason: str
    message: str


Action = (
    CreateSecret
    | CreatePod
    | DeletePod
    | ArmJoin
    | DisarmJoin
    | MoveSelfJoin
    | Leave
    | AddFinalizer
    | RemoveFinalizer
    | Emit
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The decision of one pass."""

    #: The status to publish; the runtime writes it only when it differs.
    status: ScheduledBotStatus
    actions: tuple[Action, ...] = ()
    #: When to run the next pass unless a watch event comes first; None: only on events.
    wake_at: datetime | None = None
    #: The bot's control address whose state reports to follow, if any.
    follow: str | None = None


__all__ = [
    "FINALIZER",
    "Action",
    "AddFinalizer",
    "ArmJoin",
    "BotReport",
    "BotView",
    "CreatePod",
    "CreateSecret",
    "Defaults",
    "DeletePod",
    "DisarmJoin",
    "Emit",
    "EventType",
    "Leave",
    "MoveSelfJoin",
    "Observed",
    "Plan",
    "PodView",
    "RemoveFinalizer",
    "SignalOutcome",
]
