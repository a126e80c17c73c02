"""`joinAt` as users write it: ISO 8601 with an explicit UTC offset.

Why a parser of our own
=======================
Users write offsets without a colon (`2025-06-16T16:24:00+0000`, as in the
README). The apiserver's `format: date-time` rejects it, and `datetime.fromisoformat`
accepts far more than we want to promise (a date alone, no offset, week dates).
So the accepted language is pinned here once, as `JOIN_AT_PATTERN`, and used
twice: by `parse_join_at` (the operator and its webhook) and by the CRD's CEL
rule (the apiserver, which holds even while the operator is down). A unit test
runs both over the same table. Timestamps that machines wrote (the apiserver's
metadata, the operator's own status) are read by `scheduledbot.timestamps`, which
also prints every timestamp the operator writes.

The pattern is plain RE2 and Python `re` alike: no lookarounds, no
backslashes (so it can sit in a CEL string literal unescaped). It checks the
range of each field; what a regular expression cannot see (February 30, year
0000) is checked by `parse_join_at` and by a second CEL rule.

Why not naive times
===================
A time without an offset means a different instant on every cluster node and
in every calendar; the README's example carries one. Rejecting it with a
message that shows the expected form costs the user one edit.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from scheduledbot.api.errors import FieldError, FieldValueError, quote_value

_DATE: Final = "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME: Final = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]([.][0-9]{1,9})?"
_OFFSET: Final = "(Z|[+-]([01][0-9]|2[0-3]):?[0-5][0-9])"

#: The accepted `joinAt` language, anchored; the CRD's CEL rule uses this very string.
JOIN_AT_PATTERN: Final = f"^{_DATE}T{_TIME}{_OFFSET}$"

#: A `joinAt` that is right but for its missing offset: lets both the parser and
#: CEL say "has no UTC offset" instead of a generic complaint.
LOCAL_DATE_TIME_PATTERN: Final = f"^{_DATE}T{_TIME}$"

#: The tail of every `joinAt` message, shared with the CRD's CEL messages.
EXPECTED_FORM: Final = "expected ISO 8601 with an offset, e.g. 2025-06-16T16:24:00Z or 2025-06-16T16:24:00+0000"

_JOIN_AT_RE: Final = re.compile(JOIN_AT_PATTERN)

# Lenient on purpose: it recognises what the user meant, so that the message can
# name the one part that is wrong (a missing offset, month 13) rather than reject
# the whole string. Acceptance is still decided by _JOIN_AT_RE.
_SHAPE_RE: Final = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?)?"
    r"(?P<offset>Z|(?P<sign>[+-])(?P<off_hour>\d{2}):?(?P<off_minute>\d{2}))?",
    re.ASCII,
)

_MAX_FRACTION_DIGITS: Final = 9
_MICROSECOND_DIGITS: Final = 6


class JoinAtError(FieldValueError):
    """A `joinAt` value is not ISO 8601 with an offset, or names no real instant."""


def parse_join_at(text: str, *, field: str = "spec.joinAt") -> datetime:
    """The instant `text` names, as an aware UTC datetime.

    Fractional seconds beyond microseconds are truncated, never rounded, so a
    time is never moved into the next second. `field` names the value in
    messages (status.joinAt is parsed with the same rules).
    """
    shape = _SHAPE_RE.fullmatch(text)
    if shape is None:
        raise _error(field, text, "is not an ISO 8601 date-time")
    parts = shape.groupdict()
    if parts["hour"] is None:
        raise _error(field, text, "is a date without a time of day")
    if parts["second"] is None:
        raise _error(field, text, "has no seconds")
    if parts["offset"] is None:
        raise _error(field, text, "has no UTC offset")
    fraction = parts["fraction"] or ""
    if len(fraction) > _MAX_FRACTION_DIGITS:
        raise _error(field, text, f"has more than {_MAX_FRACTION_DIGITS} fractional-second digits")
    _check_ranges(field, text, parts)
    if _JOIN_AT_RE.fullmatch(text) is None:  # the ranges above mirror it; this keeps them honest
        raise _error(field, text, "is not an ISO 8601 date-time")
    offset = timedelta(hours=int(parts["off_hour"] or 0), minutes=int(parts["off_minute"] or 0))
    local = datetime(
        int(parts["year"]),
        int(parts["month"]),
        int(parts["day"]),
        int(parts["hour"]),
        int(parts["minute"]),
        int(parts["second"]),
        int(fraction[:_MICROSECOND_DIGITS].ljust(_MICROSECOND_DIGITS, "0")),
        tzinfo=timezone(-offset if parts["sign"] == "-" else offset),
    )
    try:
        return local.astimezone(UTC)
    except OverflowError:
        raise _error(field, text, "is out of range once converted to UTC") from None


def _check_ranges(field: str, text: str, parts: dict[str, str | None]) -> None:
    year, month = int(parts["year"] or 0), int(parts["month"] or 0)
    limits = (
        ("year", parts["year"], 1, 9999),
        ("month", parts["month"], 1, 12),
        ("hour", parts["hour"], 0, 23),
        ("minute", parts["minute"], 0, 59),
        ("second", parts["second"], 0, 59),
        ("offset hours", parts["off_hour"], 0, 23),
        ("offset minutes", parts["off_minute"], 0, 59),
    )
    for name, value, low, high in limits:
        if value is not None and not low <= int(value) <= high:
            raise _error(field, text, f"has {name} {value} out of range {low}..{high}")
    last_day = calendar.monthrange(year, month)[1]
    day = parts["day"] or "0"
    if not 1 <= int(day) <= last_day:
        raise _error(field, text, f"has day {day} out of range 1..{last_day} for {year:04d}-{month:02d}")


def _error(field: str, text: str, problem: str) -> JoinAtError:
    return JoinAtError(FieldError(field, f"{quote_value(text)} {problem}; {EXPECTED_FORM}"))
