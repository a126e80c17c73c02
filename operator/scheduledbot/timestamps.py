"""The one RFC 3339 codec for machine-written timestamps.

Kubernetes metadata (`creationTimestamp`, `deletionTimestamp`), the status fields
and annotations the operator writes, and the bot protocol's `since` and `joinAt`
are all read and written here, in UTC with a `Z`.

Two readers
===========
`parse_time` reads what machines wrote, so it accepts whatever
`datetime.fromisoformat` reads, provided the text carries an offset; an error
says only what was received.

`parse_join_at` reads a `joinAt`: a user's `spec.joinAt`, or the protocol's
`joinAt` the agent receives on `/v1/schedule`. Its language is pinned
(`JOIN_AT_PATTERN`, also the CRD's CEL rule) and its error names the one part
that is wrong. It lives here, not in `scheduledbot.api`, because the in-pod
agent must accept exactly what the operator accepts and may import nothing of
the operator; `scheduledbot.api.joinat` words its errors for users.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Final


def format_time(moment: datetime) -> str:
    """`moment` as RFC 3339 UTC: `2025-06-16T16:24:00Z`, or `...00.250Z` when it has a fraction.

    Whole seconds print without a fraction, as the apiserver prints its own
    timestamps; any fraction prints as milliseconds, the precision of the
    lateness figures.
    """
    if moment.utcoffset() is None:
        raise ValueError(f"format_time needs an aware datetime, got naive {moment.isoformat()}")
    utc = moment.astimezone(UTC)
    whole = utc.replace(tzinfo=None, microsecond=0).isoformat()
    if utc.microsecond == 0:
        return f"{whole}Z"
    return f"{whole}.{utc.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """The instant `text` names, as an aware UTC datetime.

    A timestamp without an offset is refused: it names a different instant on
    every machine, and guessing a zone would silently shift it.
    """
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"not an RFC 3339 timestamp: {_shown(text)}") from None
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a UTC offset: {_shown(text)}")
    return moment.astimezone(UTC)


def parse_observed(text: object) -> datetime | None:
    """A timestamp of an observed object (a field another writer may leave out or garble):
    one that is absent, not text, or does not parse counts as absent."""
    if not isinstance(text, str):
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


def format_epoch(seconds: float) -> str:
    """`format_time` of a POSIX timestamp (the agent keeps its clock as epoch seconds)."""
    return format_time(datetime.fromtimestamp(seconds, tz=UTC))


def parse_epoch(text: str) -> float:
    """`parse_time` as a POSIX timestamp."""
    return parse_time(text).timestamp()


# The `joinAt` language (users' `spec.joinAt`, the protocol's `joinAt`). It is pinned
# once, here, beside the codec, so that the operator (`scheduledbot.api.joinat`, which
# words the user-facing errors and feeds the pattern to the CRD's CEL rule) and the
# in-pod agent (`/v1/schedule`) accept exactly the same times.

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


class JoinAtSyntaxError(ValueError):
    """`text` is not in the `joinAt` language; `problem` names the part that is wrong.

    `str()` is `<text, cut> <problem>; <expected form>`; callers put the field's name
    in front (`scheduledbot.api.joinat` as a `FieldError`, the agent as `joinAt: `).
    """

    def __init__(self, text: str, problem: str) -> None:
        super().__init__(f"{_shown(text)} {problem}; {EXPECTED_FORM}")
        self.text: Final = text
        self.problem: Final = problem


def parse_join_at(text: str) -> datetime:
    """The instant a `joinAt` names, as an aware UTC datetime; `JoinAtSyntaxError` if it is not one.

    Fractional seconds beyond microseconds are truncated, never rounded, so a
    time is never moved into the next second.
    """
    shape = _SHAPE_RE.fullmatch(text)
    if shape is None:
        raise JoinAtSyntaxError(text, "is not an ISO 8601 date-time")
    parts = shape.groupdict()
    if parts["hour"] is None:
        raise JoinAtSyntaxError(text, "is a date without a time of day")
    if parts["second"] is None:
        raise JoinAtSyntaxError(text, "has no seconds")
    if parts["offset"] is None:
        raise JoinAtSyntaxError(text, "has no UTC offset")
    fraction = parts["fraction"] or ""
    if len(fraction) > _MAX_FRACTION_DIGITS:
        raise JoinAtSyntaxError(text, f"has more than {_MAX_FRACTION_DIGITS} fractional-second digits")
    _check_ranges(text, parts)
    if _JOIN_AT_RE.fullmatch(text) is None:  # the ranges above mirror it; this keeps them honest
        raise JoinAtSyntaxError(text, "is not an ISO 8601 date-time")
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
        raise JoinAtSyntaxError(text, "is out of range once converted to UTC") from None


def _check_ranges(text: str, parts: dict[str, str | None]) -> None:
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
            raise JoinAtSyntaxError(text, f"has {name} {value} out of range {low}..{high}")
    last_day = calendar.monthrange(year, month)[1]
    day = parts["day"] or "0"
    if not 1 <= int(day) <= last_day:
        raise JoinAtSyntaxError(text, f"has day {day} out of range 1..{last_day} for {year:04d}-{month:02d}")


def _shown(text: object) -> str:
    """The received value for a message, cut short: it may come from a hostile bot."""
    shown = repr(text)
    return shown if len(shown) <= 80 else f"{shown[:77]}..."
