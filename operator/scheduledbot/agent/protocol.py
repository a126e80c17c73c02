"""The wire format of bot protocol v1: names, the state document, the join request.

Why a module of its own
=======================

The operator's adapter and the in-pod agent are written separately against
docs/bot-protocol.md. Keeping every name that crosses the
wire here (paths, environment variables, states, JSON keys) makes the agent's
side reviewable against the contract in one screen, and lets a test import the
same constants instead of repeating string literals.

Nothing here does I/O or reads a clock: timestamps are passed in.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, get_args

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
JoinedBy: TypeAlias = Literal["signal", "deadline"]

ALL_STATES: Final[frozenset[str]] = frozenset(get_args(BotState))
TERMINAL_STATES: Final[frozenset[str]] = frozenset({"ended", "failed"})
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


def format_timestamp(epoch_seconds: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2025-06-16T16:55:00.123Z``.

    Milliseconds because join lateness is published in milliseconds; a coarser
    ``since`` would make the agent's own record useless for checking it.
    """
    moment = datetime.datetime.fromtimestamp(epoch_seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> float:
    """Parse an RFC 3339 / ISO 8601 timestamp with an explicit offset to epoch seconds.

    A naive timestamp is refused: a join time without an offset is ambiguous,
    and guessing the Pod's local zone would silently shift the join.
    """
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a UTC offset: {text!r}")
    return moment.timestamp()


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
    #: epoch seconds when the join started (the state became ``joining``); kept from then on
    join_started_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "version": self.version,
            "state": self.state,
            "since": format_timestamp(self.since),
            "message": self.message,
            "reason": self.reason,
            "joinedBy": self.joined_by,
            "requestId": self.request_id,
            "exitCode": self.exit_code,
            "joinStartedAt": None if self.join_started_at is None else format_timestamp(self.join_started_at),
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
            join_at = parse_timestamp(join_at_text) if join_at_text else None
        except ValueError as exc:
            raise ValueError(f"joinAt: {exc}") from None
        return cls(request_id=request_id, meeting_url=meeting_url, bot_name=bot_name, join_at=join_at)


def _optional_str(body: Mapping[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{key} must be a string")
