"""joinAt: what parse_join_at accepts and rejects, how format_time prints, and
that the CRD's CEL pattern agrees with the parser on the same table."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduledbot.api.joinat import (
    EXPECTED_FORM,
    JOIN_AT_PATTERN,
    JoinAtError,
    parse_join_at,
)
from scheduledbot.timestamps import format_time

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "meetingbots.dev_scheduledbots.yaml"

# (text, the instant it names, format_time of it)
ACCEPTED = [
    pytest.param(
        "2025-06-16T16:24:00+0000",
        datetime(2025, 6, 16, 16, 24, tzinfo=UTC),
        "2025-06-16T16:24:00Z",
        id="an offset without a colon (+0000) normalizes to Z",
    ),
    pytest.param(
        "2025-06-16T16:24:00+00:00",
        datetime(2025, 6, 16, 16, 24, tzinfo=UTC),
        "2025-06-16T16:24:00Z",
        id="an offset of +00:00 is UTC",
    ),
    pytest.param(
        "2025-06-16T16:24:00Z",
        datetime(2025, 6, 16, 16, 24, tzinfo=UTC),
        "2025-06-16T16:24:00Z",
        id="Z is UTC",
    ),
    pytest.param(
        "2025-06-16T16:24:00-00:00",
        datetime(2025, 6, 16, 16, 24, tzinfo=UTC),
        "2025-06-16T16:24:00Z",
        id="an offset of -00:00 is UTC",
    ),
    pytest.param(
        "2025-06-16T11:24:00-05:00",
        datetime(2025, 6, 16, 16, 24, tzinfo=UTC),
        "2025-06-16T16:24:00Z",
        id="a negative offset with a colon converts to UTC",
    ),
    pytest.param(
        "2025-06-16T21:54:00+0530",
        datetime(2025, 6, 16, 16, 24, tzinfo=UTC),
        "2025-06-16T16:24:00Z",
        id="a half-hour offset without a colon converts to UTC",
    ),
    pytest.param(
        "2025-06-16T23:30:00-01:00",
        datetime(2025, 6, 17, 0, 30, tzinfo=UTC),
        "2025-06-17T00:30:00Z",
        id="an offset that crosses midnight moves the date",
    ),
    pytest.param(
        "2025-06-16T16:24:00.250Z",
        datetime(2025, 6, 16, 16, 24, 0, 250_000, tzinfo=UTC),
        "2025-06-16T16:24:00.250Z",
        id="milliseconds are kept and printed",
    ),
    pytest.param(
        "2025-06-16T16:24:00.5+00:00",
        datetime(2025, 6, 16, 16, 24, 0, 500_000, tzinfo=UTC),
        "2025-06-16T16:24:00.500Z",
        id="one fractional digit means tenths",
    ),
    pytest.param(
        "2025-06-16T16:24:00.123456789Z",
        datetime(2025, 6, 16, 16, 24, 0, 123_456, tzinfo=UTC),
        "2025-06-16T16:24:00.123Z",
        id="nine fractional digits are truncated to microseconds, never rounded",
    ),
    pytest.param(
        "2025-06-16T16:24:59.9999999Z",
        datetime(2025, 6, 16, 16, 24, 59, 999_999, tzinfo=UTC),
        "2025-06-16T16:24:59.999Z",
        id="truncation never carries into the next second",
    ),
    pytest.param(
        "2024-02-29T10:00:00Z",
        datetime(2024, 2, 29, 10, tzinfo=UTC),
        "2024-02-29T10:00:00Z",
        id="February 29 exists in a leap year",
    ),
    pytest.param(
        "2000-02-29T10:00:00Z",
        datetime(2000, 2, 29, 10, tzinfo=UTC),
        "2000-02-29T10:00:00Z",
        id="February 29 exists in a year divisible by 400",
    ),
    pytest.param(
        "2025-12-31T23:59:59+23:59",
        datetime(2025, 12, 31, 0, 0, 59, tzinfo=UTC),
        "2025-12-31T00:00:59Z",
        id="the largest offset is accepted",
    ),
]

# (text, what the message says, which CRD rule rejects it: "pattern", "calendar",
# or None when only the operator can: see the module docstring of joinat)
REJECTED = [
    pytest.param("2025-06-16T16:24:00", "has no UTC offset", "pattern", id="a time without an offset"),
    pytest.param("2025-06-16", "is a date without a time of day", "pattern", id="a date alone"),
    pytest.param("tomorrow at 5pm", "is not an ISO 8601 date-time", "pattern", id="free text"),
    pytest.param("", "is not an ISO 8601 date-time", "pattern", id="an empty string"),
    pytest.param("2025-06-16T16:24Z", "has no seconds", "pattern", id="a time without seconds"),
    pytest.param("2025-06-16 16:24:00Z", "is not an ISO 8601 date-time", "pattern", id="a space for the T"),
    pytest.param("2025-06-16t16:24:00z", "is not an ISO 8601 date-time", "pattern", id="lowercase t and z"),
    pytest.param("20250616T162400Z", "is not an ISO 8601 date-time", "pattern", id="the basic format"),
    pytest.param("2025-06-16T16:24:00+05", "is not an ISO 8601 date-time", "pattern", id="an offset of hours only"),
    pytest.param("2025-06-16T16:24:00,5Z", "is not an ISO 8601 date-time", "pattern", id="a comma before the fraction"),
    pytest.param(
        "2025-06-16T16:24:00.1234567890Z",
        "has more than 9 fractional-second digits",
        "pattern",
        id="ten fractional digits",
    ),
    pytest.param("2025-13-01T00:00:00Z", "has month 13 out of range 1..12", "pattern", id="month 13"),
    pytest.param("2025-00-01T00:00:00Z", "has month 00 out of range 1..12", "pattern", id="month 0"),
    pytest.param("2025-01-32T00:00:00Z", "has day 32 out of range 1..31 for 2025-01", "pattern", id="day 32"),
    pytest.param("2025-01-00T00:00:00Z", "has day 00 out of range 1..31 for 2025-01", "pattern", id="day 0"),
    pytest.param("2025-06-16T24:00:00Z", "has hour 24 out of range 0..23", "pattern", id="hour 24"),
    pytest.param("2025-06-16T16:60:00Z", "has minute 60 out of range 0..59", "pattern", id="minute 60"),
    pytest.param("2025-06-30T23:59:60Z", "has second 60 out of range 0..59", "pattern", id="a leap second"),
    pytest.param("2025-06-16T16:24:00+24:00", "has offset hours 24 out of range 0..23", "pattern", id="offset +24:00"),
    pytest.param("2025-06-16T16:24:00+0060", "has offset minutes 60 out of range 0..59", "pattern", id="offset +00:60"),
    pytest.param(
        "\uff12\uff10\uff12\uff15-06-16T16:24:00Z", "is not an ISO 8601 date-time", "pattern", id="non-ASCII digits"
    ),
    pytest.param("2025-06-16T16:24:00Z\n", "is not an ISO 8601 date-time", "pattern", id="a trailing newline"),
    pytest.param(" 2025-06-16T16:24:00Z", "is not an ISO 8601 date-time", "pattern", id="a leading space"),
    pytest.param(
        "2025-02-29T10:00:00Z",
        "has day 29 out of range 1..28 for 2025-02",
        "calendar",
        id="February 29 of a common year",
    ),
    pytest.param(
        "2100-02-29T10:00:00Z", "has day 29 out of range 1..28 for 2100-02", "calendar", id="February 29 of 2100"
    ),
    pytest.param("2025-04-31T10:00:00Z", "has day 31 out of range 1..30 for 2025-04", "calendar", id="April 31"),
    pytest.param("0000-01-01T00:00:00Z", "has year 0000 out of range 1..9999", "calendar", id="year 0000"),
    pytest.param(
        "9999-12-31T23:59:59-01:00",
        "is out of range once converted to UTC",
        None,
        id="a time that is past year 9999 in UTC",
    ),
]


@pytest.mark.parametrize(("text", "instant", "formatted"), ACCEPTED)
def test_parse_join_at_accepts(text: str, instant: datetime, formatted: str) -> None:
    parsed = parse_join_at(text)
    assert parsed == instant
    assert parsed.tzinfo is UTC
    assert format_time(parsed) == formatted


@pytest.mark.parametrize(("text", "problem", "crd_rule"), REJECTED)
def test_parse_join_at_rejects(text: str, problem: str, crd_rule: str | None) -> None:
    with pytest.raises(JoinAtError) as caught:
        parse_join_at(text)
    message = str(caught.value)
    assert message.startswith("spec.joinAt: ")
    assert problem in message
    assert message.endswith(f"; {EXPECTED_FORM}")
    assert caught.value.error.path == "spec.joinAt"


def test_a_missing_offset_is_explained_with_the_expected_form() -> None:
    with pytest.raises(JoinAtError) as caught:
        parse_join_at("2025-06-16T16:24:00")
    assert str(caught.value) == (
        'spec.joinAt: "2025-06-16T16:24:00" has no UTC offset; expected ISO 8601 with an offset, '
        "e.g. 2025-06-16T16:24:00Z or 2025-06-16T16:24:00+0000"
    )


def test_a_join_at_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_join_at("soon")


def test_the_field_named_in_messages_can_be_chosen() -> None:
    with pytest.raises(JoinAtError, match=r'^status\.joinAt: "soon" '):
        parse_join_at("soon", field="status.joinAt")


def test_very_long_input_is_cut_in_the_message() -> None:
    with pytest.raises(JoinAtError) as caught:
        parse_join_at("x" * 10_000)
    assert len(str(caught.value)) < 300


def test_format_time_output_parses_back_to_the_same_instant() -> None:
    moment = datetime(2025, 6, 16, 16, 24, 0, 250_000, tzinfo=UTC)
    assert parse_join_at(format_time(moment)) == moment


def _crd_join_at_pattern() -> str:
    crd = yaml.safe_load(CRD_FILE.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rule = schema["properties"]["spec"]["properties"]["joinAt"]["x-kubernetes-validations"][0]["rule"]
    found = re.fullmatch(r"self\.matches\('(.*)'\)", rule)
    assert found, rule
    return found.group(1)


def test_the_crd_carries_the_parsers_pattern() -> None:
    assert _crd_join_at_pattern() == JOIN_AT_PATTERN


def test_the_pattern_needs_no_escaping_and_no_lookarounds() -> None:
    # It sits in a CEL string literal, and CEL's RE2 has no lookarounds.
    assert "\\" not in JOIN_AT_PATTERN and "'" not in JOIN_AT_PATTERN
    assert "(?" not in JOIN_AT_PATTERN


# fullmatch on the anchored pattern behaves as RE2's `matches` does: Python's
# `$` alone would also match before a trailing newline, RE2's does not.
@pytest.mark.parametrize(("text", "instant", "formatted"), ACCEPTED)
def test_the_crd_pattern_accepts_what_the_parser_accepts(text: str, instant: datetime, formatted: str) -> None:
    assert re.fullmatch(_crd_join_at_pattern(), text) is not None


@pytest.mark.parametrize(("text", "problem", "crd_rule"), REJECTED)
def test_the_crd_pattern_rejects_what_the_parser_rejects(text: str, problem: str, crd_rule: str | None) -> None:
    matched = re.fullmatch(_crd_join_at_pattern(), text) is not None
    # Calendar days and year 0000 are the second CEL rule's; past-9999 only the operator's.
    assert matched == (crd_rule != "pattern")
