"""`joinAt` as users write it: ISO 8601 with an explicit UTC offset.

Why a parser of our own
=======================
Users write offsets without a colon (`2025-06-16T16:24:00+0000`, as in the
README). The apiserver's `format: date-time` rejects it, and `datetime.fromisoformat`
accepts far more than we want to promise (a date alone, no offset, week dates).
So the accepted language is pinned once, as `JOIN_AT_PATTERN`, and used by
`parse_join_at` (the operator and its webhook), by the CRD's CEL rule (the
apiserver, which holds even while the operator is down) and by the in-pod agent
(`/v1/schedule`). A unit test runs the parser and CEL over the same table.

The language and its parser live in `scheduledbot.timestamps`, which the agent may
import; this module words its errors for users: the field's path first, the value
quoted as JSON, the expected form last. Timestamps that machines wrote (the
apiserver's metadata, the operator's own status) are read by
`scheduledbot.timestamps.parse_time`, which also prints every timestamp the
operator writes.

The pattern is plain RE2 and Python `re` alike: no lookarounds, no
backslashes (so it can sit in a CEL string literal unescaped). It checks the
range of each field; what a regular expression cannot see (February 30, year
0000) is checked by the parser and by a second CEL rule.

Why not naive times
===================
A time without an offset means a different instant on every cluster node and
in every calendar; the README's example carries one. Rejecting it with a
message that shows the expected form costs the user one edit.
"""

from __future__ import annotations

from datetime import datetime

from scheduledbot import timestamps
from scheduledbot.api.errors import FieldError, FieldValueError, quote_value
from scheduledbot.timestamps import EXPECTED_FORM, JOIN_AT_PATTERN, LOCAL_DATE_TIME_PATTERN

__all__ = ["EXPECTED_FORM", "JOIN_AT_PATTERN", "LOCAL_DATE_TIME_PATTERN", "JoinAtError", "parse_join_at"]


class JoinAtError(FieldValueError):
    """A `joinAt` value is not ISO 8601 with an offset, or names no real instant."""


def parse_join_at(text: str, *, field: str = "spec.joinAt") -> datetime:
    """The instant `text` names, as an aware UTC datetime.

    Fractional seconds beyond microseconds are truncated, never rounded, so a
    time is never moved into the next second. `field` names the value in
    messages (status.joinAt is parsed with the same rules).
    """
    try:
        return timestamps.parse_join_at(text)
    except timestamps.JoinAtSyntaxError as error:
        raise JoinAtError(FieldError(field, f"{quote_value(text)} {error.problem}; {EXPECTED_FORM}")) from None
