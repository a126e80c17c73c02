"""The one RFC 3339 codec for machine-written timestamps.

Kubernetes metadata (`creationTimestamp`, `deletionTimestamp`), the status fields
and annotations the operator writes, and the bot protocol's `since` and `joinAt`
are all read and written here, in UTC with a `Z`.

What a user types into `spec.joinAt` is not parsed here: `scheduledbot.api.joinat`
pins that language and names the one part that is wrong. This module reads what
machines wrote, so it accepts whatever `datetime.fromisoformat` reads, provided
the text carries an offset; an error says only what was received.
"""

from __future__ import annotations

from datetime import UTC, datetime


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


def format_epoch(seconds: float) -> str:
    """`format_time` of a POSIX timestamp (the agent keeps its clock as epoch seconds)."""
    return format_time(datetime.fromtimestamp(seconds, tz=UTC))


def parse_epoch(text: str) -> float:
    """`parse_time` as a POSIX timestamp."""
    return parse_time(text).timestamp()


def _shown(text: object) -> str:
    """The received value for a message, cut short: it may come from a hostile bot."""
    shown = repr(text)
    return shown if len(shown) <= 80 else f"{shown[:77]}..."
