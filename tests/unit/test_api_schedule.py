"""The BotSchedule API: parsing with field-path errors, the derived template, URL normalization,
child names, and the admission rules that CEL cannot check."""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduledbot.api.errors import SpecError
from scheduledbot.api.models import ScheduledBotSpec
from scheduledbot.api.platforms import MeetingUrlError, find_meeting_url, normalize_meeting_url
from scheduledbot.api.schedule import (
    CRON_PATTERN,
    LOCAL_TIME_PATTERN,
    RULE_PATTERN,
    TIME_ZONE_PATTERN,
    BotTemplateSpec,
    ConcurrencyPolicy,
    SourceKind,
    ValidCron,
    ValidICal,
    ValidRRule,
    parse_schedule_spec,
)
from scheduledbot.core.occurrences import Occurrence
from scheduledbot.core.schedule_admission import admit_schedule, check_feed_url
from scheduledbot.core.schedule_children import child_name

URL = "https://zoom.us/j/123456789"
BASE: dict[str, Any] = {
    "timeZone": "Europe/Berlin",
    "cron": "0 9 * * 1-5",
    "botTemplate": {"spec": {"meetingUrl": URL}},
}


def errors(spec: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_schedule_spec(spec, extra_hosts=frozenset())
    return list(caught.value.messages)


def test_a_cron_schedule_parses_with_its_defaults() -> None:
    valid = parse_schedule_spec(BASE, extra_hosts=frozenset())
    assert valid.source == ValidCron(expression="0 9 * * 1-5") and valid.kind is SourceKind.CRON
    assert str(valid.zone) == "Europe/Berlin"
    assert valid.template_spec == {"meetingUrl": URL, "botName": "Meeting Bot"}
    assert (valid.horizon, valid.starting_deadline) == (timedelta(days=1), timedelta(seconds=300))
    assert (valid.suspend, valid.concurrency_policy) == (False, ConcurrencyPolicy.ALLOW)
    assert (valid.successful_history_limit, valid.failed_history_limit) == (3, 1)


def test_an_rrule_and_an_ical_schedule_parse() -> None:
    rrule = parse_schedule_spec(
        {
            **{k: v for k, v in BASE.items() if k != "cron"},
            "rrule": {
                "dtstart": "2026-03-02T09:00:00",
                "rule": "RRULE:FREQ=WEEKLY;BYDAY=MO",
                "exdates": ["2026-04-06T09:00:00"],
            },
            "concurrencyPolicy": "Forbid",
        },
        extra_hosts=frozenset(),
    )
    assert rrule.source == ValidRRule(
        dtstart=datetime(2026, 3, 2, 9),
        rule="RRULE:FREQ=WEEKLY;BYDAY=MO",
        exdates=(datetime(2026, 4, 6, 9),),
        rdates=(),
    )
    assert rrule.concurrency_policy is ConcurrencyPolicy.FORBID
    ical = parse_schedule_spec(
        {
            "timeZone": "UTC",
            "ical": {
                "urlSecretRef": {"name": "calendar", "key": "url"},
                "pollIntervalSeconds": 600,
                "filters": {"summaryRegex": "^Sync", "organizer": "MAILTO:Alice@Example.com"},
            },
            "botTemplate": {"spec": {"botName": "Notes"}},
        },
        extra_hosts=frozenset(),
    )
    assert isinstance(ical.source, ValidICal)
    assert (ical.source.secret_name, ical.source.secret_key) == ("calendar", "url")
    assert ical.source.poll_interval == timedelta(minutes=10) and ical.source.organizer == "alice@example.com"
    assert ical.meeting_url is None and ical.describe() == "ical calendar/url"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(None, ["spec: is required"], id="no spec"),
        pytest.param(
            {"cron": "0 9 * * *", "botTemplate": {"spec": {"meetingUrl": URL}}},
            ["spec.timeZone: is required"],
            id="no time zone: there is no default",
        ),
        pytest.param(
            {**BASE, "timeZone": "Europe/Berln"},
            [
                'spec.timeZone: "Europe/Berln" is not a known time zone; expected an IANA time zone name such as '
                "Europe/Berlin or America/New_York"
            ],
            id="an unknown zone",
        ),
        pytest.param(
            {**BASE, "rrule": {"dtstart": "2026-03-02T09:00:00", "rule": "FREQ=DAILY"}},
            ["spec: must have exactly one of cron, rrule and ical (given: spec.cron, spec.rrule)"],
            id="two sources",
        ),
        pytest.param(
            {"timeZone": "UTC", "botTemplate": {"spec": {"meetingUrl": URL}}},
            ["spec: must have exactly one of cron, rrule and ical (given: none)"],
            id="no source",
        ),
        pytest.param(
            {**BASE, "cron": "0 9 * *"},
            [
                'spec.cron: "0 9 * *" does not have five fields; expected five fields (minute hour day-of-month '
                'month day-of-week), e.g. "0 9 * * 1-5"'
            ],
            id="four cron fields",
        ),
        pytest.param(
            {**BASE, "cron": "61 9 * * *"},
            [
                'spec.cron: "61 9 * * *" is not a valid cron schedule (Bad minute); expected five fields (minute '
                'hour day-of-month month day-of-week), e.g. "0 9 * * 1-5"'
            ],
            id="a minute out of range",
        ),
        pytest.param(
            {**BASE, "botTemplate": {"spec": {}}},
            [
                "spec.botTemplate.spec.meetingUrl: is required for cron and rrule schedules (only calendar feeds "
                "give each event its own link)"
            ],
            id="cron without a meeting",
        ),
        pytest.param(
            {**BASE, "botTemplate": {"spec": {"meetingUrl": "https://example.com/room", "maxDurationSeconds": 10}}},
            [
                'spec.botTemplate.spec.meetingUrl: "https://example.com/room" is not a supported meeting URL; '
                "supported: Zoom (https://zoom.us/j/...), Google Meet (https://meet.google.com/...), Microsoft "
                "Teams (https://teams.microsoft.com/...), Webex (https://*.webex.com/...)",
                "spec.botTemplate.spec.maxDurationSeconds: 10 is invalid: input should be greater than or equal to 60",
            ],
            id="the template is checked as a ScheduledBot spec",
        ),
        pytest.param(
            {**BASE, "horizonSeconds": 29 * 86400, "cron": "0 9 * *"},
            [
                'spec.cron: "0 9 * *" does not have five fields; expected five fields (minute hour day-of-month '
                'month day-of-week), e.g. "0 9 * * 1-5"',
                "spec.horizonSeconds: 2505600 is invalid: input should be less than or equal to 2419200",
            ],
            id="every problem at once, in field order",
        ),
        pytest.param(
            {
                **BASE,
                "botTemplate": {"spec": {"meetingUrl": URL, "template": {"spec": {"containers": [{"name": "bot"}]}}}},
            },
            [
                "spec.botTemplate.spec.template: is not allowed: the operator creates a schedule's bots, so nobody "
                "could check that the schedule's author may create that Pod; name a BotClass (botClassName) that "
                "holds the template instead"
            ],
            id="no inline Pod template: the operator creates the children",
        ),
        pytest.param(
            {**BASE, "concurrencyPolicy": "Sometimes"},
            ["spec.concurrencyPolicy: \"Sometimes\" is invalid: input should be 'Allow', 'Forbid' or 'Replace'"],
            id="an unknown concurrency policy",
        ),
    ],
)
def test_parse_errors_name_the_field_and_the_expected_form(spec: Any, expected: list[str]) -> None:
    assert errors(spec) == expected


RRULE_BASE = {"timeZone": "Europe/Berlin", "botTemplate": {"spec": {"meetingUrl": URL}}}


@pytest.mark.parametrize(
    ("rrule", "expected"),
    [
        pytest.param(
            {"dtstart": "2026-02-30T09:00:00", "rule": "FREQ=DAILY"},
            'spec.rrule.dtstart: "2026-02-30T09:00:00" is not a real calendar date',
            id="a dtstart that does not exist",
        ),
        pytest.param(
            {"dtstart": "2026-03-02T09:00:00Z", "rule": "FREQ=DAILY"},
            'spec.rrule.dtstart: "2026-03-02T09:00:00Z" is not a local date-time',
            id="a dtstart with an offset: the zone is spec.timeZone",
        ),
        pytest.param(
            {"dtstart": "2026-03-02T09:00:00", "rule": "FREQ=DAILY;UNTIL=20260401T000000"},
            "UNTIL values must be specified in UTC",
            id="a local UNTIL",
        ),
        pytest.param(
            {"dtstart": "2026-03-02T09:00:00", "rule": "FREQ=FORTNIGHTLY"},
            "spec.rrule.rule: \"FREQ=FORTNIGHTLY\" is not a valid RRULE (invalid 'FREQ': FORTNIGHTLY)",
            id="an unknown frequency",
        ),
        pytest.param(
            {"dtstart": "2026-03-02T09:00:00", "rule": "BYDAY=MO"},
            'spec.rrule.rule: "BYDAY=MO" is not an RRULE value',
            id="no FREQ",
        ),
        pytest.param(
            {"dtstart": "2026-03-02T09:00:00", "rule": "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30"},
            "never occurs (e.g. February 30)",
            id="a rule that never occurs",
        ),
        pytest.param(
            {"dtstart": "2026-03-02T09:00:00", "rule": "FREQ=MINUTELY;BYSETPOS=2"},
            "uses BYSETPOS with an hourly or minutely frequency",
            id="a minutely rule with a set position",
        ),
        pytest.param(
            {"dtstart": "2026-03-02T09:00:00", "rule": "FREQ=SECONDLY"},
            "FREQ=SECONDLY is not supported",
            id="by the second",
        ),
        pytest.param(
            {"dtstart": "2026-03-02T09:00:00", "rule": "FREQ=DAILY", "exdates": ["2026-03-03", "2026-03-04T09:00:00"]},
            'spec.rrule.exdates[0]: "2026-03-03" is not a local date-time',
            id="an exdate without a time",
        ),
    ],
)
def test_rrule_errors(rrule: dict[str, Any], expected: str) -> None:
    [message] = errors({**RRULE_BASE, "rrule": rrule})
    assert expected in message, message


def test_a_rule_that_never_occurs_is_refused_in_bounded_time() -> None:
    # dateutil alone searches a minutely rule until the year 9999 (seconds of CPU); the check moves it first.
    [message] = errors(
        {**RRULE_BASE, "rrule": {"dtstart": "2026-03-02T09:00:00", "rule": "FREQ=WEEKLY;BYMONTH=2;BYMONTHDAY=31"}}
    )
    assert "never occurs" in message
    # A rule that is rare but real is accepted: February 29 every year.
    parse_schedule_spec(
        {**RRULE_BASE, "rrule": {"dtstart": "2026-01-01T09:00:00", "rule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29"}},
        extra_hosts=frozenset(),
    )


def test_the_template_is_scheduled_bots_spec_without_join_at_and_with_an_optional_meeting() -> None:
    assert set(BotTemplateSpec.model_fields) == set(ScheduledBotSpec.model_fields) - {"join_at"}
    for name, field in BotTemplateSpec.model_fields.items():
        original = ScheduledBotSpec.model_fields[name]
        assert field.alias == original.alias and field.metadata == original.metadata, name
    assert not BotTemplateSpec.model_fields["meeting_url"].is_required()


def test_every_zone_name_of_the_database_matches_the_cel_shape() -> None:
    pattern = re.compile(TIME_ZONE_PATTERN)
    names = zoneinfo.available_timezones()
    assert len(names) > 400
    assert not [name for name in names if not pattern.fullmatch(name)]
    for wrong in ("Europe/", "/Berlin", "Europe Berlin", "UTC+2:00", "../etc/passwd"):
        assert not pattern.fullmatch(wrong), wrong


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        pytest.param(
            CRON_PATTERN,
            ["0 9 * * 1-5", "*/5 * * * *", " 0  9 * * MON "],
            ["@daily", "0 9 * *", "CRON_TZ=UTC 0 9 * * *"],
            id="cron",
        ),
        pytest.param(
            LOCAL_TIME_PATTERN,
            ["2026-03-02T09:00:00", "2026-03-02 09:00:00"],
            ["2026-03-02T09:00", "2026-03-02T09:00:00Z", "2026-13-01T00:00:00"],
            id="local time",
        ),
        pytest.param(
            RULE_PATTERN,
            ["FREQ=WEEKLY;BYDAY=MO,-1FR", "RRULE:FREQ=DAILY;UNTIL=20260101T000000Z"],
            ["FREQ=DAILY\nEXDATE:20260101", "DTSTART:20260101T000000 FREQ=DAILY"],
            id="rule",
        ),
    ],
)
def test_the_cel_patterns(pattern: str, good: list[str], bad: list[str]) -> None:
    compiled = re.compile(pattern)
    assert all(compiled.fullmatch(text) for text in good)
    assert not any(compiled.fullmatch(text) for text in bad)


# --- meeting links --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("links", "same"),
    [
        pytest.param(
            [
                "https://zoom.us/j/123?pwd=abc",
                "https://us02web.zoom.us/j/123?pwd=abc&utm_source=x#success",
                "HTTPS://Zoom.US:443/j/123/?pwd=abc",
            ],
            True,
            id="Zoom: subdomain, tracking, case, port, slash",
        ),
        pytest.param(
            ["https://zoom.us/j/123?pwd=abc", "https://zoom.us/j/123?pwd=other"], False, id="Zoom: another passcode"
        ),
        pytest.param(["https://zoom.us/j/123", "https://zoom.us/j/124"], False, id="Zoom: another meeting"),
        pytest.param(
            ["https://meet.google.com/abc-defg-hij", "https://meet.google.com/ABC-DEFG-HIJ?authuser=1&hs=122"],
            True,
            id="Meet: case and query",
        ),
        pytest.param(
            [
                "https://teams.microsoft.com/l/meetup-join/19%3ameeting_N2Q%40thread.v2/0?context=%7b%22Tid%22%7d",
                "https://teams.microsoft.com/l/meetup-join/19:meeting_N2Q@thread.v2/0?context={%22Tid%22}",
            ],
            True,
            id="Teams: percent-encoding",
        ),
        pytest.param(
            [
                "https://teams.microsoft.com/l/meetup-join/19:meeting_N2Q@thread.v2/0",
                "https://teams.microsoft.com/l/meetup-join/19:meeting_n2q@thread.v2/0",
            ],
            False,
            id="Teams: ids are case-sensitive",
        ),
    ],
)
def test_equivalent_links_normalize_equal(links: list[str], same: bool) -> None:
    assert (len({normalize_meeting_url(link) for link in links}) == 1) is same


def test_normalization_refuses_what_detection_refuses() -> None:
    with pytest.raises(MeetingUrlError):
        normalize_meeting_url("https://evil.example\\@zoom.us/j/1")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        pytest.param(
            "Join: <https://meet.google.com/abc-defg-hij>.", "https://meet.google.com/abc-defg-hij", id="in brackets"
        ),
        pytest.param(
            "see https://example.com/agenda then https://zoom.us/j/99).",
            "https://zoom.us/j/99",
            id="the first supported",
        ),
        pytest.param("Room 4, second floor", None, id="no link"),
        pytest.param("https://zoom.us.example.com/j/1", None, id="a look-alike host"),
    ],
)
def test_find_meeting_url(text: str, found: str | None) -> None:
    assert find_meeting_url(text) == found


# --- child names ------------------------------------------------------------------------------------


def test_child_names_are_stable_bounded_and_label_safe() -> None:
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    cron = Occurrence(start=start, key="20260302T080000Z")
    assert child_name("standup", SourceKind.CRON, cron) == "standup-1772438400"
    moved = Occurrence(start=start + timedelta(hours=2), key="uid@x|20260302T080000Z", uid="uid@x")
    same = Occurrence(start=start, key="uid@x|20260302T080000Z", uid="uid@x")
    other = Occurrence(start=start, key="uid@x|20260309T080000Z", uid="uid@x")
    assert child_name("cal", SourceKind.ICAL, moved) == child_name("cal", SourceKind.ICAL, same)
    assert child_name("cal", SourceKind.ICAL, other) != child_name("cal", SourceKind.ICAL, same)
    longest = "a" * 52
    for kind, occurrence in ((SourceKind.RRULE, cron), (SourceKind.ICAL, same)):
        name = child_name(longest, kind, occurrence)
        assert len(name) == 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    with pytest.raises(ValueError, match="at most 52"):
        child_name("a" * 53, SourceKind.CRON, cron)


# --- admission ------------------------------------------------------------------------------------------


NOW = datetime(2026, 3, 2, 7, tzinfo=UTC)


def test_admission_returns_every_parse_error() -> None:
    spec = {**BASE, "timeZone": "Mars/Olympus", "cron": "0 9 * *"}
    reasons = admit_schedule(operation="CREATE", spec=spec, old_spec=None, now=NOW, extra_hosts=frozenset())
    assert [reason.split(":")[0] for reason in reasons] == ["spec.timeZone", "spec.cron"]


def test_admission_refuses_a_rule_that_will_not_occur_again_but_only_when_it_is_written() -> None:
    spec = {**RRULE_BASE, "rrule": {"dtstart": "2026-01-05T09:00:00", "rule": "FREQ=WEEKLY;COUNT=3"}}
    [reason] = admit_schedule(operation="CREATE", spec=spec, old_spec=None, now=NOW, extra_hosts=frozenset())
    assert reason.startswith("spec.rrule: has no occurrence after now (2026-03-02T07:00:00Z)")
    # An old schedule whose rule has run out can still be edited (suspended, relabelled) without touching the rule.
    assert (
        admit_schedule(
            operation="UPDATE", spec={**spec, "suspend": True}, old_spec=spec, now=NOW, extra_hosts=frozenset()
        )
        == []
    )
    assert admit_schedule(operation="CREATE", spec=BASE, old_spec=None, now=NOW, extra_hosts=frozenset()) == []


@pytest.mark.parametrize(
    ("url", "allowed", "problem"),
    [
        pytest.param("https://calendar.example.com/private-abc/basic.ics", frozenset(), None, id="https"),
        pytest.param("webcal://calendar.example.com/feed.ics", frozenset(), None, id="webcal (fetched over https)"),
        pytest.param(
            "http://calendar.example.com/feed.ics",
            frozenset(),
            "(http://calendar.example.com/...) is not https",
            id="http",
        ),
        pytest.param(
            "http://127.0.0.1:8080/cal.ics", frozenset({"127.0.0.1:8080"}), None, id="http to an allowed test host"
        ),
        pytest.param(
            "https://user:secret@calendar.example.com/x.ics", frozenset(), "must not contain user info", id="user info"
        ),
        pytest.param("file:///etc/passwd", frozenset(), "has no host", id="a file"),
        pytest.param("https://cal.example.com/a b", frozenset(), "whitespace", id="whitespace"),
    ],
)
def test_the_feed_url_check_never_repeats_the_secret(url: str, allowed: frozenset[str], problem: str | None) -> None:
    reasons = check_feed_url(url, extra_hosts=allowed)
    if problem is None:
        assert reasons == []
        return
    [reason] = reasons
    assert reason.startswith("spec.ical.urlSecretRef: ") and problem in reason
    assert "private-abc" not in reason and "secret" not in reason.removeprefix("spec.ical.urlSecretRef: ")
