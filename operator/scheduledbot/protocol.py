"""Bot protocol v1 (docs/bot-protocol.md): the contract between the operator and a bot Pod.

Why a module of its own, at the bottom
======================================
The operator builds the Pod (`core.children`) and talks to it (`adapters.bots`);
the in-pod agent (`agent`) answers. Both sides import every name that crosses
the wire from here (paths, the port and its name, environment variables, states
and their groups, `joinedBy`, the documents), so the contract is one screen that
neither side can drift from, and `agent` needs nothing of the operator to speak it.

Nothing here does I/O or reads a clock: timestamps are passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, get_args

from scheduledbot.timestamps import format_epoch, parse_epoch

PROTOCOL_VERSION: Final = "v1"

READY_PATH: Final = "/v1/ready"
JOIN_PATH: Final = "/v1/join"
LEAVE_PATH: Final = "/v1/leave"
STATE_PATH: Final = "/v1/state"
SCHEDULE_PATH: Final = "/v1/schedule"

DEFAULT_CONTROL_PORT: Final = 8181
CONTROL_PORT_NAME: Final = "control"
DEFAULT_SELF_JOIN_DELAY_SECONDS: Final = 2.0
MAX_LONG_POLL_SECONDS: Final = 60.0
DEFAULT_LONG_POLL_SECONDS: Final = 30.0

# Pod environment (docs/bot-protocol.md, "What the Pod receives").
ENV_MEETING_URL: Final = "MEETING_URL"
ENV_BOT_NAME: Final = "BOT_NAME"
ENV_JOIN_AT: Final = "JOIN_AT"
ENV_BOT_CONFIG: Final = "BOT_CONFIG"
ENV_SCHEDULEDBOT_NAME: Final = "SCHEDULEDBOT_NAME"
ENV_SCHEDULEDBOT_NAMESPACE: Final = "SCHEDULEDBOT_NAMESPACE"
ENV_POD_NAME: Final = "POD_NAME"
ENV_POD_IP: Final = "POD_IP"
ENV_BOT_CONTROL_PORT: Final = "BOT_CONTROL_PORT"
ENV_BOT_TOKEN_FILE: Final = "BOT_TOKEN_FILE"
ENV_BOT_SELF_JOIN_DELAY_SECONDS: Final = "BOT_SELF_JOIN_DELAY_SECONDS"
ENV_JOIN_DEADLINE_SECONDS: Final = "JOIN_DEADLINE_SECONDS"
ENV_MAX_DURATION_SECONDS: Final = "MAX_DURATION_SECONDS"
# Added by the command mode to the wrapped command's environment only.
ENV_JOIN_REQUEST_ID: Final = "JOIN_REQUEST_ID"
ENV_JOINED_BY: Final = "JOINED_BY"

BotState: TypeAlias = Literal["ready", "joining", "waiting_room", "joined", "recording", "leaving", "ended", "failed"]


class JoinedBy(enum.StrEnum):
    """What started the join (`joinedBy`)."""

    #: The operator's join call at joinAt.
    SIGNAL = "signal"
    #: The bot Pod's own timer, when no signal had come shortly after joinAt.
    DEADLINE = "deadline"


ALL_STATES: Final[frozenset[str]] = frozenset(get_args(BotState))
#: Nothing follows: the bot is done and its Pod exits.
TERMINAL_STATES: Final[frozenset[str]] = frozenset({"ended", "failed"})
#: Joining, in, or leaving the meeting: a ScheduledBot deleted now makes its bot leave first.
IN_MEETING_STATES: Final[frozenset[str]] = frozenset({"joining", "waiting_room", "joined", "recording", "leaving"})
#: States a bot reports itself; `ready` and `joining` belong to the agent.
REPORTABLE_STATES: Final[frozenset[str]] = frozenset(
    {"waiting_room", "joined", "recording", "leaving", "ended", "failed"}
)

# Reasons the agent itself puts into the document.
REASON_MISSED: Final = "Missed"
REASON_BOT_EXITED: Final = "BotExited"
REASON_BOT_FAILED: Final = "BotFailed"
REASON_PREPARE_FAILED: Final = "PrepareFailed"
REASON_MAX_DURATION: Final = "MaxDuration"
REASON_TERMINATED: Final = "Terminated"
REASON_LEAVE_REQUESTED: Final = "LeaveRequested"


@dataclass(frozen=True, kw_only=True)
class StateDoc:
    """The state document: what every authenticated endpoint answers.

    ``version`` starts at 1 and grows by one per change, so a long-poll with
    ``after=<last seen version>`` can never miss a change, however many
    happen between two polls (it sees the latest one).
    """

    version: int
    state: BotState
    since: float  # epoch seconds of the last change, from the agent's clock
    message: str = ""
    reason: str | None = None
    joined_by: JoinedBy | None = None
    request_id: str | None = None
    exit_code: int | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "version": self.version,
            "state": self.state,
            "since": format_epoch(self.since),
            "message": self.message,
            "reason": self.reason,
            "joinedBy": self.joined_by,
            "requestId": self.request_id,
            "exitCode": self.exit_code,
        }


@dataclass(frozen=True, kw_only=True)
class JoinRequest:
    """The body of ``POST /v1/join``. Only ``requestId`` is required.

    The meeting fields default to what the Pod got in its environment; the
    operator sends them anyway so that a join is self-describing in logs.
    """

    request_id: str
    meeting_url: str | None = None
    bot_name: str | None = None
    join_at: float | None = None

    @classmethod
    def from_json(cls, body: object) -> JoinRequest:
        """Validate a decoded JSON body; raises ValueError with a message for the caller."""
        if not isinstance(body, Mapping):
            raise ValueError("the join body must be a JSON object")
        request_id = body.get("requestId")
        if not isinstance(request_id, str) or not request_id:
            raise ValueError("requestId must be a non-empty string")
        meeting_url = _optional_str(body, "meetingUrl")
        bot_name = _optional_str(body, "botName")
        join_at_text = _optional_str(body, "joinAt")
        try:
            join_at = parse_epoch(join_at_text) if join_at_text else None
        except ValueError as exc:
            raise ValueError(f"joinAt: {exc}") from None
        return cls(request_id=request_id, meeting_url=meeting_url, bot_name=bot_name, join_at=join_at)


def _optional_str(body: Mapping[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{key} must be a string")
