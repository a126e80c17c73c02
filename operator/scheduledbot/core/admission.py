"""Admission rules that need the clock or the operator's settings.

Why here and not in the CRD
===========================
The schema and CEL rules hold even while the operator is down, so everything that
can live there does. Two kinds of rule cannot: "joinAt is not in the past" (CEL has
no clock) and "the meeting URL belongs to a supported platform" (the admin may allow
an extra host, an operator setting). The admission webhook runs these; the operator
applies the same rules as a backstop when the webhook was not called.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from scheduledbot.api.errors import SpecError
from scheduledbot.api.joinat import format_time
from scheduledbot.api.models import ValidSpec, parse_spec

#: The furthest ahead a bot may be scheduled.
MAX_AHEAD: Final = timedelta(days=3 * 365)


def admit(
    *,
    operation: str,
    spec: dict[str, Any],
    old_spec: dict[str, Any] | None,
    now: datetime,
    extra_hosts: frozenset[str],
) -> list[str]:
    """The reasons to reject a CREATE or UPDATE of a ScheduledBot; empty to admit it."""
    try:
        valid = parse_spec(spec, extra_hosts=extra_hosts)
    except SpecError as error:
        return list(error.messages)
    if operation == "CREATE" or _join_at_changed(valid, old_spec, extra_hosts):
        return _clock_rules(valid, now)
    return []


def _join_at_changed(valid: ValidSpec, old_spec: dict[str, Any] | None, extra_hosts: frozenset[str]) -> bool:
    if old_spec is None:
        return True
    try:
        return parse_spec(old_spec, extra_hosts=extra_hosts).join_at != valid.join_at
    except SpecError:
        return True


def _clock_rules(valid: ValidSpec, now: datetime) -> list[str]:
    if valid.join_at < now:
        return [f"spec.joinAt cannot be in the past: {format_time(valid.join_at)} is before now ({format_time(now)})"]
    if valid.join_at > now + MAX_AHEAD:
        return [
            f"spec.joinAt cannot be more than 3 years ahead: {format_time(valid.join_at)} "
            f"is after {format_time(now + MAX_AHEAD)}"
        ]
    return []
