"""A BotSchedule's children: their names, their bodies, and how an observed ScheduledBot is read.

Why the names are fixed
=======================
As the CronJob controller names Jobs after their scheduled time, a child's name
is a function of its occurrence, so a restart or two racing passes can only
ever create *the* child of an occurrence, and AlreadyExists means it is done:

- cron and rrule: `<schedule>-<start as Unix seconds>` (ten digits until 2286);
- feeds: `<schedule>-<10 hex digits of SHA-256(UID | RECURRENCE-ID)>`, so an
  occurrence moved in the calendar keeps its child (and is patched), and one
  event's occurrences never collide.

Both suffixes have 11 characters and a ScheduledBot's name is at most 63, so a
BotSchedule's name is at most 52 (a CEL rule on the CRD says so).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from scheduledbot.api import resource
from scheduledbot.api.models import BotState
from scheduledbot.api.schedule import MAX_NAME_LENGTH, SourceKind, ValidSchedule
from scheduledbot.core.children import label_value
from scheduledbot.core.occurrences import Occurrence
from scheduledbot.timestamps import format_time, parse_observed

#: On every child: the BotSchedule's name (list a schedule's children with `-l`).
SCHEDULE_LABEL: Final = "meetingbots.dev/botschedule"
#: The occurrence's start as the source gives it (RFC 3339 UTC); joinAt differs only for a child created late.
OCCURRENCE_ANNOTATION: Final = "meetingbots.dev/occurrence"
UID_ANNOTATION: Final = "meetingbots.dev/ical-uid"
RECURRENCE_ID_ANNOTATION: Final = "meetingbots.dev/ical-recurrence-id"
SEQUENCE_ANNOTATION: Final = "meetingbots.dev/ical-sequence"
_MAX_UID_ANNOTATION: Final = 1024
_STATES: Final = frozenset(state.value for state in BotState)


def child_name(schedule: str, kind: SourceKind, occurrence: Occurrence) -> str:
    """The deterministic name of `occurrence`'s ScheduledBot (at most 63 characters for a valid schedule name)."""
    if len(schedule) > MAX_NAME_LENGTH:
        raise ValueError(f"a BotSchedule name has at most {MAX_NAME_LENGTH} characters, got {len(schedule)}")
    if kind is SourceKind.ICAL:
        return f"{schedule}-{hashlib.sha256(occurrence.key.encode()).hexdigest()[:10]}"
    return f"{schedule}-{int(occurrence.start.timestamp()):010d}"


def owner_reference(*, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": resource.API_VERSION,
        "kind": resource.BOT_SCHEDULE.kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_spec(schedule: ValidSchedule, occurrence: Occurrence, *, join_at: datetime) -> dict[str, Any]:
    """The ScheduledBot spec of `occurrence`: the template, its meeting and its joinAt."""
    spec = dict(schedule.template_spec)
    url = schedule.meeting_url or occurrence.meeting_url
    if url is not None:
        spec["meetingUrl"] = url
    spec["joinAt"] = format_time(join_at)
    return spec


def occurrence_annotations(occurrence: Occurrence) -> dict[str, str]:
    """What a child records of its occurrence (and, for feeds, of its event)."""
    out = {OCCURRENCE_ANNOTATION: format_time(occurrence.start)}
    if occurrence.uid is not None:
        out[UID_ANNOTATION] = occurrence.uid[:_MAX_UID_ANNOTATION]
        out[SEQUENCE_ANNOTATION] = str(occurrence.sequence or 0)
    if occurrence.recurrence_id is not None:
        out[RECURRENCE_ID_ANNOTATION] = format_time(occurrence.recurrence_id)
    return out


def build_child(
    *, name: str, namespace: str, uid: str, schedule: ValidSchedule, occurrence: Occurrence, join_at: datetime
) -> dict[str, Any]:
    """The ScheduledBot of one occurrence, owned by the BotSchedule (its controller)."""
    return {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "metadata": {
            "name": child_name(name, schedule.kind, occurrence),
            "namespace": namespace,
            "labels": {**schedule.labels, SCHEDULE_LABEL: label_value(name)},
            "annotations": {**schedule.annotations, **occurrence_annotations(occurrence)},
            "ownerReferences": [owner_reference(name=name, uid=uid)],
        },
        "spec": child_spec(schedule, occurrence, join_at=join_at),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class BotRef:
    """A ScheduledBot of the namespace as the cache shows it: a child, or another bot (for duplicates)."""

    name: str
    uid: str
    deleting: bool
    state: BotState | None
    join_at: datetime | None
    meeting_url: str | None
    #: Its controller, when that is a BotSchedule.
    schedule_name: str | None
    schedule_uid: str | None
    #: The occurrence it was created for (the annotation), when a BotSchedule made it.
    occurrence: datetime | None
    #: When it ended or failed (status.endedAt), for the history limits.
    ended_at: datetime | None
    spec: Mapping[str, Any]

    @property
    def instant(self) -> datetime | None:
        """When the meeting it joins starts: its occurrence, else its joinAt."""
        return self.occurrence or self.join_at


def observe_bot(body: Mapping[str, Any]) -> BotRef:
    """A ScheduledBot body (as the apiserver returns it) as a `BotRef`; unreadable fields become None."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    controller = next(
        (
            ref
            for ref in metadata.get("ownerReferences") or []
            if ref.get("controller")
            and ref.get("kind") == resource.BOT_SCHEDULE.kind
            and str(ref.get("apiVersion", "")).startswith(f"{resource.GROUP}/")
        ),
        None,
    )
    state = status.get("state")
    url = spec.get("meetingUrl")
    annotations = metadata.get("annotations") or {}
    return BotRef(
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        deleting=metadata.get("deletionTimestamp") is not None,
        state=BotState(state) if isinstance(state, str) and state in _STATES else None,
        join_at=parse_observed(spec.get("joinAt")),
        meeting_url=url if isinstance(url, str) else None,
        schedule_name=controller.get("name") if controller else None,
        schedule_uid=controller.get("uid") if controller else None,
        occurrence=parse_observed(annotations.get(OCCURRENCE_ANNOTATION)) if controller else None,
        ended_at=parse_observed(status.get("endedAt")),
        spec=spec,
    )
