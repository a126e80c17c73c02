"""The one codec of machine-written timestamps: what it prints, and what it reads back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from scheduledbot.timestamps import (
    EXPECTED_FORM,
    JoinAtSyntaxError,
    format_epoch,
    format_time,
    parse_epoch,
    parse_join_at,
    parse_observed,
    parse_time,
)


@pytest.mark.parametrize(
    ("moment", "formatted"),
    [
        pytest.param(
            datetime(2025, 6, 16, 16, 24, tzinfo=UTC), "2025-06-16T16:24:00Z", id="whole seconds print no fraction"
        ),
        pytest.param(
            datetime(2025, 6, 16, 16, 24, 0, 250_000, tzinfo=UTC),
            "2025-06-16T16:24:00.250Z",
            id="a fraction prints as milliseconds",
        ),
        pytest.param(
            datetime(2025, 6, 16, 16, 24, 0, 999, tzinfo=UTC),
            "2025-06-16T16:24:00.000Z",
            id="less than a millisecond still prints a fraction",
        ),
        pytest.param(
            datetime(2025, 6, 16, 18, 24, tzinfo=timezone(timedelta(hours=2))),
            "2025-06-16T16:24:00Z",
            id="another offset converts to UTC",
        ),
        pytest.param(datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05Z", id="years print four digits"),
    ],
)
def test_format_time(moment: datetime, formatted: str) -> None:
    assert format_time(moment) == formatted


def test_format_time_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="aware"):
        format_time(datetime(2025, 6, 16, 16, 24))


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        pytest.param("2025-06-16T16:24:00Z", datetime(2025, 6, 16, 16, 24, tzinfo=UTC), id="the apiserver's form"),
        pytest.param(
            "2025-06-16T16:24:00.123456Z",
            datetime(2025, 6, 16, 16, 24, 0, 123_456, tzinfo=UTC),
            id="microseconds (MicroTime)",
        ),
        pytest.param(
            "2025-06-16T16:24:00.123456789Z",
            datetime(2025, 6, 16, 16, 24, 0, 123_456, tzinfo=UTC),
            id="nanoseconds (a Go bot's RFC3339Nano) truncate",
        ),
        pytest.param(
            "2025-06-16T18:24:00+02:00", datetime(2025, 6, 16, 16, 24, tzinfo=UTC), id="an offset converts to UTC"
        ),
    ],
)
def test_parse_time_reads_what_machines_write(text: str, instant: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == instant
    assert parsed.tzinfo is UTC


def test_parse_time_refuses_a_time_without_offset() -> None:
    with pytest.raises(ValueError, match="without a UTC offset"):
        parse_time("2025-06-16T16:24:00")


def test_parse_time_names_what_it_received_within_bounds() -> None:
    with pytest.raises(ValueError, match="not an RFC 3339 timestamp: 'soon'"):
        parse_time("soon")
    with pytest.raises(ValueError) as caught:
        parse_time("x" * 10_000)
    assert len(str(caught.value)) < 120


def test_the_epoch_forms_round_trip_to_the_millisecond() -> None:
    assert format_epoch(1_750_000_000.1234) == "2025-06-15T15:06:40.123Z"
    assert parse_epoch("2025-06-15T15:06:40.123Z") == pytest.approx(1_750_000_000.123)
    assert parse_time(format_time(datetime(2025, 6, 16, 16, 24, 0, 250_000, tzinfo=UTC))).microsecond == 250_000


def test_the_join_at_parser_names_the_wrong_part_and_the_expected_form_without_a_field() -> None:
    # The agent's words (`joinAt: ` + this); api.joinat words the same problem for users.
    with pytest.raises(JoinAtSyntaxError) as caught:
        parse_join_at("2025-06-16T16:24:00")
    assert caught.value.problem == "has no UTC offset"
    assert str(caught.value) == f"'2025-06-16T16:24:00' has no UTC offset; {EXPECTED_FORM}"


def test_the_join_at_parser_is_stricter_than_parse_time() -> None:
    # parse_time reads what machines wrote; a joinAt keeps to the pinned language.
    assert parse_time("2025-06-16 16:24:00+00:00") == datetime(2025, 6, 16, 16, 24, tzinfo=UTC)
    with pytest.raises(JoinAtSyntaxError, match="is not an ISO 8601 date-time"):
        parse_join_at("2025-06-16 16:24:00+00:00")
    assert parse_join_at("2025-06-16T16:24:00+0000") == datetime(2025, 6, 16, 16, 24, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "read"),
    [
        pytest.param("2025-06-16T16:24:00Z", datetime(2025, 6, 16, 16, 24, tzinfo=UTC), id="a timestamp"),
        pytest.param(None, None, id="absent"),
        pytest.param(1750091040, None, id="not text"),
        pytest.param("2025-06-16T16:24:00", None, id="no offset"),
        pytest.param("yesterday", None, id="garbled"),
    ],
)
def test_an_observed_timestamp_that_cannot_be_read_counts_as_absent(text: object, read: datetime | None) -> None:
    assert parse_observed(text) == read
