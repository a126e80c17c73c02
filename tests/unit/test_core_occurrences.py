"""Table tests of occurrence expansion: cron, RRULE and iCalendar feeds, across DST, on fixed instants."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from scheduledbot.api.schedule import ValidSchedule, parse_schedule_spec
from scheduledbot.core.occurrences import FeedError, Occurrence, expand, parse_feed

URL = "https://zoom.us/j/123456789"


def schedule(zone: str, **source: Any) -> ValidSchedule:
    template: dict[str, Any] = {} if "ical" in source else {"meetingUrl": URL}
    return parse_schedule_spec({"timeZone": zone, **source, "botTemplate": {"spec": template}}, extra_hosts=frozenset())


def feed_schedule(zone: str = "Europe/Berlin", **filters: Any) -> ValidSchedule:
    return schedule(zone, ical={"urlSecretRef": {"name": "calendar", "key": "url"}, "filters": filters or None})


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def starts(occurrences: list[Occurrence]) -> list[str]:
    return [o.start.strftime("%Y-%m-%dT%H:%MZ") for o in occurrences]


def between(sched: ValidSchedule, start: str, end: str, **kw: Any) -> list[Occurrence]:
    return expand(sched, start=utc(start), end=utc(end), limit=1000, **kw)


# Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
# America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
CASES = [
    pytest.param(
        schedule("Europe/Berlin", cron="0 9 * * 1"),
        ("2026-03-20T00:00Z", "2026-04-07T00:00Z"),
        ["2026-03-23T08:00Z", "2026-03-30T07:00Z", "2026-04-06T07:00Z"],
        id="cron: weekly 09:00 Berlin stays 09:00 local across spring forward",
    ),
    pytest.param(
        schedule("Europe/Berlin", cron="0 9 * * 1"),
        ("2026-10-19T00:00Z", "2026-10-27T00:00Z"),
        ["2026-10-19T07:00Z", "2026-10-26T08:00Z"],
        id="cron: weekly 09:00 Berlin stays 09:00 local across fall back",
    ),
    pytest.param(
        schedule("America/New_York", cron="30 2 * * *"),
        ("2026-03-07T00:00Z", "2026-03-10T00:00Z"),
        ["2026-03-07T07:30Z", "2026-03-08T07:00Z", "2026-03-09T06:30Z"],
        id="cron: 02:30 in the New York gap fires at the end of the gap (03:00 EDT), never skipped",
    ),
    pytest.param(
        schedule("America/New_York", cron="30 1 * * *"),
        ("2026-10-31T00:00Z", "2026-11-03T00:00Z"),
        ["2026-10-31T05:30Z", "2026-11-01T05:30Z", "2026-11-02T06:30Z"],
        id="cron: 01:30 in the repeated New York hour fires once, the first time (EDT)",
    ),
    pytest.param(
        schedule("America/New_York", cron="*/30 1 * * *"),
        ("2026-11-01T04:00Z", "2026-11-01T08:00Z"),
        ["2026-11-01T05:00Z", "2026-11-01T05:30Z"],
        id="cron: even a sub-hourly schedule fires once per wall time in the repeated hour",
    ),
    pytest.param(
        schedule("Europe/Berlin", cron="30 2 * * *"),
        ("2026-03-28T00:00Z", "2026-03-31T00:00Z"),
        ["2026-03-28T01:30Z", "2026-03-29T01:00Z", "2026-03-30T00:30Z"],
        id="cron: 02:30 in the Berlin gap fires at 03:00 CEST",
    ),
    pytest.param(
        schedule("Europe/Berlin", cron="30 2 * * *"),
        ("2026-10-24T00:00Z", "2026-10-27T00:00Z"),
        ["2026-10-24T00:30Z", "2026-10-25T00:30Z", "2026-10-26T01:30Z"],
        id="cron: 02:30 in the repeated Berlin hour fires once (CEST)",
    ),
    pytest.param(
        schedule("Europe/Berlin", rrule={"dtstart": "2026-03-16T09:00:00", "rule": "FREQ=WEEKLY"}),
        ("2026-03-16T00:00Z", "2026-04-07T00:00Z"),
        ["2026-03-16T08:00Z", "2026-03-23T08:00Z", "2026-03-30T07:00Z", "2026-04-06T07:00Z"],
        id="rrule: weekly 09:00 Berlin in wall-clock time (not drifting to 10:00 after DST)",
    ),
    pytest.param(
        schedule("Europe/Berlin", rrule={"dtstart": "2026-03-27T02:30:00", "rule": "FREQ=DAILY;COUNT=4"}),
        ("2026-03-01T00:00Z", "2026-05-01T00:00Z"),
        ["2026-03-27T01:30Z", "2026-03-28T01:30Z", "2026-03-29T01:30Z", "2026-03-30T00:30Z"],
        id="rrule: 02:30 in the Berlin gap is shifted forward by the gap (03:30 CEST, RFC 5545 3.3.5)",
    ),
    pytest.param(
        schedule("America/New_York", rrule={"dtstart": "2026-10-31T01:30:00", "rule": "FREQ=DAILY;COUNT=3"}),
        ("2026-10-01T00:00Z", "2026-12-01T00:00Z"),
        ["2026-10-31T05:30Z", "2026-11-01T05:30Z", "2026-11-02T06:30Z"],
        id="rrule: 01:30 in the repeated New York hour is the first (EDT)",
    ),
    pytest.param(
        schedule("Europe/Berlin", rrule={"dtstart": "2026-10-24T02:30:00", "rule": "FREQ=DAILY;COUNT=3"}),
        ("2026-10-01T00:00Z", "2026-11-01T00:00Z"),
        ["2026-10-24T00:30Z", "2026-10-25T00:30Z", "2026-10-26T01:30Z"],
        id="rrule: 02:30 in the repeated Berlin hour is the first (CEST)",
    ),
    pytest.param(
        schedule("America/New_York", rrule={"dtstart": "2026-03-07T02:30:00", "rule": "FREQ=DAILY;COUNT=3"}),
        ("2026-03-01T00:00Z", "2026-04-01T00:00Z"),
        ["2026-03-07T07:30Z", "2026-03-08T07:30Z", "2026-03-09T06:30Z"],
        id="rrule: 02:30 in the New York gap becomes 03:30 EDT",
    ),
    pytest.param(
        schedule(
            "Europe/Berlin",
            rrule={"dtstart": "2026-03-02T09:00:00", "rule": "FREQ=WEEKLY;COUNT=4", "exdates": ["2026-03-09T09:00:00"]},
        ),
        ("2026-03-01T00:00Z", "2026-06-01T00:00Z"),
        ["2026-03-02T08:00Z", "2026-03-16T08:00Z", "2026-03-23T08:00Z"],
        id="rrule: an EXDATE still counts towards COUNT (4 minus 1 is 3)",
    ),
    pytest.param(
        schedule(
            "Europe/Berlin",
            rrule={"dtstart": "2026-03-02T09:00:00", "rule": "FREQ=WEEKLY;COUNT=2", "rdates": ["2026-03-04T15:00:00"]},
        ),
        ("2026-03-01T00:00Z", "2026-06-01T00:00Z"),
        ["2026-03-02T08:00Z", "2026-03-04T14:00Z", "2026-03-09T08:00Z"],
        id="rrule: an RDATE adds an occurrence",
    ),
    pytest.param(
        schedule("Europe/Berlin", rrule={"dtstart": "2026-03-29T01:00:00", "rule": "FREQ=HOURLY;COUNT=4"}),
        ("2026-03-28T00:00Z", "2026-03-30T00:00Z"),
        ["2026-03-29T00:00Z", "2026-03-29T01:00Z", "2026-03-29T02:00Z"],
        id="rrule: hourly through the gap: 02:00 moves onto 03:00, which is one occurrence, not two",
    ),
    pytest.param(
        schedule(
            "Europe/Berlin", rrule={"dtstart": "2026-01-01T10:00:00", "rule": "FREQ=DAILY;UNTIL=20260103T090000Z"}
        ),
        ("2026-01-01T00:00Z", "2026-02-01T00:00Z"),
        ["2026-01-01T09:00Z", "2026-01-02T09:00Z", "2026-01-03T09:00Z"],
        id="rrule: UNTIL (UTC) is inclusive",
    ),
    pytest.param(
        schedule("Europe/Berlin", rrule={"dtstart": "2020-01-01T00:00:30", "rule": "FREQ=MINUTELY"}),
        ("2026-03-29T00:58:00Z", "2026-03-29T01:02:00Z"),
        ["2026-03-29T00:58Z", "2026-03-29T00:59Z", "2026-03-29T01:00Z", "2026-03-29T01:01Z"],
        id="rrule: a minutely rule from years ago is expanded near the window (and through the gap once)",
    ),
]


@pytest.mark.parametrize(("sched", "window", "expected"), CASES)
def test_expansion(sched: ValidSchedule, window: tuple[str, str], expected: list[str]) -> None:
    assert starts(between(sched, *window)) == expected


def test_the_window_is_half_open_and_the_limit_holds() -> None:
    sched = schedule("UTC", cron="0 * * * *")
    found = expand(sched, start=utc("2026-01-01T00:00Z"), end=utc("2026-01-01T03:00Z"), limit=10)
    assert starts(found) == ["2026-01-01T00:00Z", "2026-01-01T01:00Z", "2026-01-01T02:00Z"]
    assert len(expand(sched, start=utc("2026-01-01T00:00Z"), end=utc("2026-02-01T00:00Z"), limit=5)) == 5


def test_cron_and_rrule_keys_are_their_starts() -> None:
    [first] = between(schedule("Europe/Berlin", cron="0 9 1 1 *"), "2026-01-01T00:00Z", "2026-01-02T00:00Z")
    assert first.key == "20260101T080000Z" and first.uid is None


FEED = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//EN
BEGIN:VEVENT
UID:weekly@example.com
RECURRENCE-ID;TZID=Europe/Berlin:20260323T090000
DTSTART;TZID=Europe/Berlin:20260324T100000
DTEND;TZID=Europe/Berlin:20260324T103000
SUMMARY:Weekly sync (moved)
LOCATION:https://meet.google.com/abc-defg-hij
SEQUENCE:3
END:VEVENT
BEGIN:VEVENT
UID:weekly@example.com
DTSTART;TZID=Europe/Berlin:20260316T090000
DTEND;TZID=Europe/Berlin:20260316T093000
RRULE:FREQ=WEEKLY;COUNT=6
EXDATE;TZID=Europe/Berlin:20260406T090000
SUMMARY:Weekly sync
ORGANIZER:mailto:Alice@Example.com
LOCATION:Room 4
DESCRIPTION:Join: https://example.com/not-a-meeting or https://meet.google.com/abc-defg-hij
SEQUENCE:2
END:VEVENT
BEGIN:VEVENT
UID:weekly@example.com
RECURRENCE-ID;TZID=Europe/Berlin:20260413T090000
DTSTART;TZID=Europe/Berlin:20260413T090000
SUMMARY:Weekly sync
STATUS:CANCELLED
END:VEVENT
BEGIN:VEVENT
UID:gap@example.com
DTSTART;TZID=Europe/Berlin:20260328T023000
RRULE:FREQ=DAILY;COUNT=3
SUMMARY:Night shift handover
X-GOOGLE-CONFERENCE:https://meet.google.com/xyz-abcd-efg
LOCATION:https://zoom.us/j/111
END:VEVENT
BEGIN:VEVENT
UID:floating@example.com
DTSTART:20260401T120000
SUMMARY:Lunch talk
LOCATION:https://zoom.us/j/222?pwd=x
END:VEVENT
BEGIN:VEVENT
UID:allday@example.com
DTSTART;VALUE=DATE:20260402
SUMMARY:Offsite
LOCATION:https://zoom.us/j/333
END:VEVENT
BEGIN:VEVENT
UID:cancelled@example.com
DTSTART:20260403T100000Z
RRULE:FREQ=DAILY;COUNT=2
STATUS:CANCELLED
SUMMARY:Cancelled series
LOCATION:https://zoom.us/j/444
END:VEVENT
BEGIN:VEVENT
UID:nygap@example.com
DTSTART;TZID=America/New_York:20260307T023000
RRULE:FREQ=DAILY;COUNT=3
SUMMARY:Night call
LOCATION:https://zoom.us/j/666
END:VEVENT
BEGIN:VEVENT
UID:berlinfallback@example.com
DTSTART;TZID=Europe/Berlin:20261024T023000
RRULE:FREQ=DAILY;COUNT=3
SUMMARY:Late shift
LOCATION:https://zoom.us/j/777
END:VEVENT
BEGIN:VEVENT
UID:fallback@example.com
DTSTART;TZID=America/New_York:20261031T013000
RRULE:FREQ=DAILY;COUNT=3
SUMMARY:Early call
LOCATION:https://zoom.us/j/555
END:VEVENT
END:VCALENDAR
"""


@pytest.fixture(scope="module")
def feed() -> Any:
    return parse_feed(FEED)


def test_a_feed_expands_overrides_exdates_and_cancellations(feed: Any) -> None:
    found = between(feed_schedule(), "2026-03-01T00:00Z", "2026-05-01T00:00Z", feed=feed)
    weekly = [o for o in found if o.uid == "weekly@example.com"]
    # COUNT=6 from 03-16: 03-23 moved to 03-24 10:00 (listed before its master), 04-06 excluded, 04-13 cancelled.
    assert starts(weekly) == ["2026-03-16T08:00Z", "2026-03-24T09:00Z", "2026-03-30T07:00Z", "2026-04-20T07:00Z"]
    moved = weekly[1]
    assert moved.key == "weekly@example.com|20260323T080000Z"  # its original start: the same occurrence
    assert moved.recurrence_id == utc("2026-03-23T08:00Z") and moved.sequence == 3
    assert moved.summary == "Weekly sync (moved)"
    assert not [o for o in found if o.uid == "cancelled@example.com"]
    assert not [o for o in found if o.uid == "allday@example.com"]


def test_feed_times_follow_dst_like_the_other_sources(feed: Any) -> None:
    found = between(feed_schedule(), "2026-03-01T00:00Z", "2026-12-01T00:00Z", feed=feed)
    gap = [o for o in found if o.uid == "gap@example.com"]
    # 02:30 on 03-29 does not exist in Berlin: 03:30 CEST (RFC 5545 3.3.5), as for rrule.
    assert starts(gap) == ["2026-03-28T01:30Z", "2026-03-29T01:30Z", "2026-03-30T00:30Z"]
    fallback = [o for o in found if o.uid == "fallback@example.com"]
    assert starts(fallback) == ["2026-10-31T05:30Z", "2026-11-01T05:30Z", "2026-11-02T06:30Z"]
    # 02:30 on 03-08 does not exist in New York: 03:30 EDT.
    ny_gap = [o for o in found if o.uid == "nygap@example.com"]
    assert starts(ny_gap) == ["2026-03-07T07:30Z", "2026-03-08T07:30Z", "2026-03-09T06:30Z"]
    # 02:30 on 10-25 happens twice in Berlin: once, the first time (CEST).
    berlin_fallback = [o for o in found if o.uid == "berlinfallback@example.com"]
    assert starts(berlin_fallback) == ["2026-10-24T00:30Z", "2026-10-25T00:30Z", "2026-10-26T01:30Z"]


def test_floating_times_are_in_the_schedules_zone(feed: Any) -> None:
    found = between(feed_schedule("America/New_York"), "2026-04-01T00:00Z", "2026-04-02T00:00Z", feed=feed)
    [lunch] = [o for o in found if o.uid == "floating@example.com"]
    assert lunch.start == utc("2026-04-01T16:00Z") and lunch.key == "floating@example.com"


def test_the_meeting_link_is_conference_data_then_location_then_description(feed: Any) -> None:
    found = between(feed_schedule(), "2026-03-01T00:00Z", "2026-05-01T00:00Z", feed=feed)
    links = {o.uid: o.meeting_url for o in found}
    assert links["gap@example.com"] == "https://meet.google.com/xyz-abcd-efg"  # X-GOOGLE-CONFERENCE wins
    assert links["floating@example.com"] == "https://zoom.us/j/222?pwd=x"  # LOCATION
    # LOCATION has no link; DESCRIPTION's first link is no meeting platform, its second is.
    assert [o.meeting_url for o in found if o.key == "weekly@example.com|20260316T080000Z"] == [
        "https://meet.google.com/abc-defg-hij"
    ]


def test_the_templates_meeting_url_overrides_the_events() -> None:
    sched = parse_schedule_spec(
        {
            "timeZone": "UTC",
            "ical": {"urlSecretRef": {"name": "c", "key": "u"}},
            "botTemplate": {"spec": {"meetingUrl": URL}},
        },
        extra_hosts=frozenset(),
    )
    found = between(sched, "2026-04-01T00:00Z", "2026-04-02T00:00Z", feed=parse_feed(FEED))
    assert {o.meeting_url for o in found} == {URL}


@pytest.mark.parametrize(
    ("filters", "uids"),
    [
        pytest.param({"summaryRegex": "^Weekly"}, {"weekly@example.com"}, id="summary regex"),
        pytest.param({"organizer": "alice@example.com"}, {"weekly@example.com"}, id="organizer, any case"),
        pytest.param(
            {"includeAllDay": True},
            {
                "weekly@example.com",
                "gap@example.com",
                "nygap@example.com",
                "floating@example.com",
                "allday@example.com",
            },
            id="all-day events on request",
        ),
    ],
)
def test_feed_filters(feed: Any, filters: dict[str, Any], uids: set[str]) -> None:
    found = between(feed_schedule(**filters), "2026-03-01T00:00Z", "2026-05-01T00:00Z", feed=feed)
    assert {o.uid for o in found} == uids


def test_an_all_day_event_joins_at_local_midnight(feed: Any) -> None:
    found = between(feed_schedule(includeAllDay=True), "2026-04-01T00:00Z", "2026-04-03T00:00Z", feed=feed)
    [offsite] = [o for o in found if o.uid == "allday@example.com"]
    assert offsite.start == utc("2026-04-01T22:00Z")


def test_google_x_wr_timezone_makes_utc_times_local() -> None:
    text = FEED.replace("PRODID:-//test//EN", "PRODID:-//test//EN\nX-WR-TIMEZONE:America/New_York").replace(
        "DTSTART:20260403T100000Z\nRRULE:FREQ=DAILY;COUNT=2\nSTATUS:CANCELLED",
        "DTSTART:20260315T130000Z\nRRULE:FREQ=WEEKLY;COUNT=2",
    )
    found = between(feed_schedule(), "2026-03-01T00:00Z", "2026-04-01T00:00Z", feed=parse_feed(text))
    series = [o for o in found if o.uid == "cancelled@example.com"]
    # 13:00Z on 03-15 is 09:00 EDT; the series repeats at 09:00 New York time.
    assert starts(series) == ["2026-03-15T13:00Z", "2026-03-22T13:00Z"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("not a calendar", "not an iCalendar document", id="garbage"),
        pytest.param("BEGIN:VCALENDAR\nBEGIN:VEVENT\n", "not an iCalendar document", id="truncated"),
        pytest.param("X" * (4 * 1024 * 1024 + 1), "more than", id="too large"),
    ],
)
def test_an_unreadable_feed_says_why(text: str, problem: str) -> None:
    with pytest.raises(FeedError, match=problem):
        parse_feed(text)


def test_no_feed_means_no_occurrences() -> None:
    assert between(feed_schedule(), "2026-03-01T00:00Z", "2026-04-01T00:00Z") == []


def test_events_at_the_same_time_come_in_key_order() -> None:
    twin = "BEGIN:VEVENT\nUID:aaa@example.com\nDTSTART:20260401T120000\nSUMMARY:Twin\nEND:VEVENT\nEND:VCALENDAR"
    found = between(
        feed_schedule(), "2026-04-01T00:00Z", "2026-04-02T00:00Z", feed=parse_feed(FEED.replace("END:VCALENDAR", twin))
    )
    assert [o.key for o in found] == ["aaa@example.com", "floating@example.com"]
