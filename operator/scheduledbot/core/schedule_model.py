"""What `plan_schedule` reads and returns: plain frozen values, no I/O.

The runtime gathers a BotSchedule, the ScheduledBots of its namespace (its
children and the others, for duplicates) and, for a feed, the last fetch's
outcome, and calls `plan_schedule` once with `now` read once. The actions are
idempotent (creation by deterministic name, AlreadyExists is success; deletion
and patches preconditioned on the child's uid), so a repeated pass never
duplicates work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from scheduledbot.api.errors import SpecError
from scheduledbot.api.schedule import BotScheduleStatus, ValidSchedule, parse_schedule_spec
from scheduledbot.core.model import Emit, EventType
from scheduledbot.core.occurrences import Feed
from scheduledbot.timestamps import parse_time


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleView:
    """The BotSchedule as the API server last showed it."""

    name: str
    namespace: str
    uid: str
    generation: int
    created_at: datetime
    deleted_at: datetime | None
    spec: ValidSchedule | None
    #: Set instead of `spec` when the spec does not parse (the webhook was bypassed).
    spec_error: str | None
    status: BotScheduleStatus


def observe_schedule(body: Mapping[str, Any], *, extra_hosts: frozenset[str]) -> ScheduleView:
    """A BotSchedule body (as the apiserver returns it) as a `ScheduleView`; a bad spec becomes `spec_error`.

    A status the operator cannot read (written by hand through the status
    subresource) is treated as empty: it is derived again by the next pass.
    """
    metadata = body.get("metadata") or {}
    spec: ValidSchedule | None = None
    error: str | None = None
    try:
        spec = parse_schedule_spec(body.get("spec"), extra_hosts=extra_hosts)
    except SpecError as invalid:
        error = str(invalid)
    try:
        status = BotScheduleStatus.model_validate(body.get("status") or {})
    except ValidationError:
        status = BotScheduleStatus()
    return ScheduleView(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        uid=str(metadata.get("uid", "")),
        generation=int(metadata.get("generation") or 0),
        created_at=_time(metadata.get("creationTimestamp")),
        deleted_at=_time(metadata.get("deletionTimestamp")) if metadata.get("deletionTimestamp") else None,
        spec=spec,
        spec_error=error,
        status=status,
    )


def _time(text: object) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"not a timestamp: {text!r}")
    return parse_time(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedState:
    """What the runtime knows of an ical schedule's feed."""

    #: The last feed that was read and parsed; kept while later reads fail.
    feed: Feed | None
    #: When the feed was last read successfully (a 304 counts).
    fetched_at: datetime | None = None
    #: The last read's failure (HTTP status, timeout, size, parse error), None when it succeeded.
    error: str | None = None
    #: When the last read (successful or not) was made, and how many have failed in a row.
    attempted_at: datetime | None = None
    failures: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateChild:
    """Create this ScheduledBot (AlreadyExists is success: the name is the occurrence's)."""

    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class PatchChild:
    """Replace the child's spec and merge these annotations, if it still has `uid` (a moved or re-planned one)."""

    name: str
    uid: str
    spec: Mapping[str, Any]
    annotations: Mapping[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteChild:
    """Delete the child, if it still has `uid` (NotFound is success)."""

    name: str
    uid: str
    reason: str


ScheduleAction = CreateChild | PatchChild | DeleteChild | Emit


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulePlan:
    """The decision of one pass over a BotSchedule."""

    #: The status to publish; the runtime writes it only when it differs.
    status: BotScheduleStatus
    actions: tuple[ScheduleAction, ...] = ()
    #: When to plan again unless a watch event comes first; None: only on events.
    wake_at: datetime | None = None
    #: ical: when to read the feed next (the poll interval, or sooner after a failure).
    fetch_at: datetime | None = None


__all__ = [
    "CreateChild",
    "DeleteChild",
    "Emit",
    "EventType",
    "FeedState",
    "PatchChild",
    "ScheduleAction",
    "SchedulePlan",
    "ScheduleView",
    "observe_schedule",
]
