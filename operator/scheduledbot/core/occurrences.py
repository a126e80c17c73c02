"""Occurrences of a BotSchedule's source between two instants: cron, RRULE, iCalendar feed.

Wall-clock time first, UTC last
===============================
A weekly 09:00 Europe/Berlin meeting is at 09:00 local on both sides of a
daylight-saving change, so every source is expanded in the schedule's local
wall-clock time and each occurrence converted to UTC only at the end (an ICS
scheduler that converts DTSTART to UTC before expanding drifts by an hour).
The conversion decides the two instants DST makes hard, the same way for all
three sources:

- a local time that does not exist (spring forward) is moved forward, never
  skipped: RRULE and feeds follow RFC 5545 section 3.3.5 (the offset from before
  the gap, so 02:30 becomes 03:30), cron follows Debian cron and cronsim (the
  job runs at the end of the gap, 03:00);
- a local time that occurs twice (fall back) is one occurrence, the first;
  this holds for cron schedules that run more often than hourly too (Debian
  cron runs those in both hours), so a bot never joins a meeting twice because
  the clock went back.

Libraries, not parsers: cronsim (croniter fires twice in the repeated hour),
python-dateutil's rrulestr, and for feeds icalendar, x-wr-timezone (Google's
X-WR-TIMEZONE) and recurring-ical-events (RRULE, RDATE, EXDATE and
RECURRENCE-ID overrides, wherever they appear in the feed).

Identity
========
`Occurrence.key` is what stays the same when an occurrence is edited: for
cron and rrule its start (an edited rule makes new occurrences); for a feed
the event's UID and, for a recurring event, its RECURRENCE-ID (its original
start), so an occurrence moved in the calendar is the same occurrence.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events
import x_wr_timezone
from cronsim import CronSim
from dateutil.rrule import DAILY, HOURLY, MINUTELY, WEEKLY, rrule, rruleset, rrulestr

from scheduledbot.api.platforms import find_meeting_url
from scheduledbot.api.schedule import ValidCron, ValidICal, ValidRRule, ValidSchedule, rule_parts

#: A feed larger than this is refused before parsing (fetching caps it too).
MAX_FEED_BYTES: Final = 4 * 1024 * 1024
#: Properties read for the meeting link, in order (RFC 7986 CONFERENCE, Google's X-GOOGLE-CONFERENCE first).
LINK_PROPERTIES: Final = ("X-GOOGLE-CONFERENCE", "CONFERENCE", "LOCATION", "DESCRIPTION")
#: Floating and all-day times may be in any zone: the feed is queried this much wider, then filtered exactly.
_ZONE_MARGIN: Final = timedelta(hours=26)
_MAX_SUMMARY: Final = 200
#: More than any daylight-saving shift (at most two hours anywhere).
_DST_MARGIN: Final = timedelta(hours=3)


@dataclass(frozen=True, slots=True, kw_only=True)
class Occurrence:
    """One occurrence: when its bot joins, and what identifies it across edits."""

    #: Aware, UTC.
    start: datetime
    key: str
    #: Feeds: the event's link (or the template's); None when the event has no supported one.
    meeting_url: str | None = None
    uid: str | None = None
    #: Feeds, recurring events: the original start (RECURRENCE-ID), aware UTC.
    recurrence_id: datetime | None = None
    sequence: int | None = None
    summary: str | None = None


class FeedError(ValueError):
    """The feed is not an iCalendar document this operator can read; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Feed:
    """A parsed feed. Treat as read-only: the calendar object is shared between passes."""

    calendar: Any
    #: UIDs with RRULE, RDATE or RECURRENCE-ID: their occurrences are keyed by RECURRENCE-ID.
    recurring: frozenset[str]
    #: UIDs whose master event is cancelled: the whole series is.
    cancelled: frozenset[str]


def parse_feed(text: str | bytes) -> Feed:
    """`text` (an iCalendar document) as a `Feed`; `FeedError` if it cannot be read."""
    if len(text) > MAX_FEED_BYTES:
        raise FeedError(f"the feed has {len(text)} bytes, more than the {MAX_FEED_BYTES} accepted")
    try:
        calendar = x_wr_timezone.to_standard(icalendar.Calendar.from_ical(text))
        events = list(calendar.walk("VEVENT"))
    except Exception as error:  # icalendar raises ValueError, KeyError, IndexError... on bad input
        raise FeedError(f"not an iCalendar document: {type(error).__name__}: {str(error)[:200]}") from None
    recurring, cancelled = set(), set()
    for event in events:
        uid = str(event.get("UID", ""))
        if any(name in event for name in ("RRULE", "RDATE", "RECURRENCE-ID")):
            recurring.add(uid)
        if "RECURRENCE-ID" not in event and str(event.get("STATUS", "")).upper() == "CANCELLED":
            cancelled.add(uid)
    return Feed(calendar=calendar, recurring=frozenset(recurring), cancelled=frozenset(cancelled))


def expand(
    schedule: ValidSchedule,
    *,
    start: datetime,
    end: datetime,
    limit: int,
    feed: Feed | None = None,
    extra_hosts: frozenset[str] = frozenset(),
) -> list[Occurrence]:
    """The schedule's occurrences with `start <= occurrence.start < end`, in order, at most `limit`.

    Feeds need `feed`; without one there are none.
    """
    source = schedule.source
    if isinstance(source, ValidCron):
        found: Iterable[Occurrence] = _once(_cron(source, schedule.zone, start))
    elif isinstance(source, ValidRRule):
        found = _once(_rrule(source, schedule.zone, start))
    elif feed is None:
        return []
    else:
        # Two events at one instant are two meetings (or one meeting twice: the planner's duplicate rule).
        found = _feed(feed, source, schedule.zone, start, end, schedule.meeting_url, extra_hosts)
    return list(itertools.islice(itertools.takewhile(lambda o: o.start < end, found), limit))


def local_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """A local wall-clock time as an aware UTC instant: a gap moves forward, a repeated time is the first."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _once(occurrences: Iterable[Occurrence]) -> Iterator[Occurrence]:
    """Drops an occurrence of a rule at the same instant as the one before it (two gap times moved onto one)."""
    previous: datetime | None = None
    for occurrence in occurrences:
        if occurrence.start != previous:
            yield occurrence
        previous = occurrence.start


def _cron(source: ValidCron, zone: ZoneInfo, start: datetime) -> Iterator[Occurrence]:
    # cronsim yields the instants at or after its start, one second before ours so that `start` itself counts.
    for moment in CronSim(source.expression, (start - timedelta(seconds=1)).astimezone(zone)):
        if moment.fold == 1 and moment.replace(fold=0).utcoffset() != moment.utcoffset():
            continue  # the second pass through a repeated hour
        instant = moment.astimezone(UTC)
        if instant >= start:
            yield Occurrence(start=instant, key=_stamp(instant))


#: Frequencies whose periods have a fixed length in wall-clock time: a rule can start any whole number of them later.
_FIXED_PERIODS: Final = {
    WEEKLY: timedelta(weeks=1),
    DAILY: timedelta(days=1),
    HOURLY: timedelta(hours=1),
    MINUTELY: timedelta(minutes=1),
}


def build_rrule(source: ValidRRule, zone: ZoneInfo, *, near: datetime | None = None) -> rruleset:
    """The rule with its exdates and rdates, on aware local times (dateutil steps in wall-clock time).

    dateutil walks every occurrence from dtstart, so a minutely rule that began a
    year ago costs seconds per lookup. Given `near`, a rule without COUNT starts
    a whole number of its periods later, shortly before `near`: the same
    occurrences from there on, found in microseconds.
    """
    rules = rruleset()
    parsed = rrulestr(source.rule, dtstart=source.dtstart.replace(tzinfo=zone))
    assert isinstance(parsed, rrule)  # one RRULE value (the API's pattern), never a set
    freq, interval, count = rule_parts(parsed)
    if near is not None and count is None and freq in _FIXED_PERIODS:
        period = _FIXED_PERIODS[freq] * interval
        lead = near.astimezone(zone).replace(tzinfo=None) - _DST_MARGIN - source.dtstart
        if lead > period:
            parsed = parsed.replace(dtstart=(source.dtstart + (lead // period) * period).replace(tzinfo=zone))
    rules.rrule(parsed)
    for moment in source.exdates:
        rules.exdate(moment.replace(tzinfo=zone))
    for moment in source.rdates:
        rules.rdate(moment.replace(tzinfo=zone))
    return rules


def _rrule(source: ValidRRule, zone: ZoneInfo, start: datetime) -> Iterator[Occurrence]:
    rules = build_rrule(source, zone, near=start)
    # A wall time before `start` may map to an instant after it (a gap moves it forward): begin a little early.
    for moment in rules.xafter(start.astimezone(zone) - _DST_MARGIN):
        instant = local_instant(moment.replace(tzinfo=None), zone)
        if instant >= start:
            yield Occurrence(start=instant, key=_stamp(instant))


def _feed(
    feed: Feed,
    source: ValidICal,
    zone: ZoneInfo,
    start: datetime,
    end: datetime,
    template_url: str | None,
    extra_hosts: frozenset[str],
) -> Iterator[Occurrence]:
    query = recurring_ical_events.of(feed.calendar)
    components = query.between(start - _ZONE_MARGIN, end + _ZONE_MARGIN)
    found = []
    for event in components:
        occurrence = _event(event, feed, source, zone, template_url, extra_hosts)
        if occurrence is not None and start <= occurrence.start < end:
            found.append(occurrence)
    # Two events may start at once: their keys order them, so that the same feed always gives the same list.
    yield from sorted(found, key=lambda o: (o.start, o.key))


def _event(
    event: Any,
    feed: Feed,
    source: ValidICal,
    zone: ZoneInfo,
    template_url: str | None,
    extra_hosts: frozenset[str],
) -> Occurrence | None:
    uid = str(event.get("UID", ""))
    if not uid or uid in feed.cancelled or str(event.get("STATUS", "")).upper() == "CANCELLED":
        return None
    begins = _instant(event.get("DTSTART"), zone)
    if begins is None or (begins[1] and not source.include_all_day):
        return None
    summary = str(event.get("SUMMARY", ""))
    if source.summary_regex is not None and source.summary_regex.search(summary) is None:
        return None
    if source.organizer is not None:
        organizer = str(event.get("ORGANIZER", "")).strip().lower().removeprefix("mailto:")
        if organizer != source.organizer:
            return None
    recurrence_id = None
    key = uid
    if uid in feed.recurring:
        original = _instant(event.get("RECURRENCE-ID"), zone)
        recurrence_id = original[0] if original is not None else begins[0]
        key = f"{uid}|{_stamp(recurrence_id)}"
    try:
        sequence = int(event.get("SEQUENCE", 0))
    except (TypeError, ValueError):
        sequence = 0
    return Occurrence(
        start=begins[0],
        key=key,
        meeting_url=template_url or _link(event, extra_hosts),
        uid=uid,
        recurrence_id=recurrence_id,
        sequence=sequence,
        summary=summary[:_MAX_SUMMARY],
    )


def _instant(prop: Any, zone: ZoneInfo) -> tuple[datetime, bool] | None:
    """A DTSTART / RECURRENCE-ID as (aware UTC instant, is a whole day); floating times are in `zone`."""
    value = getattr(prop, "dt", None)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return local_instant(value, zone), False
        return value.replace(fold=0).astimezone(UTC), False
    if isinstance(value, date):
        return local_instant(datetime.combine(value, time()), zone), True
    return None


def _link(event: Any, extra_hosts: frozenset[str]) -> str | None:
    for name in LINK_PROPERTIES:
        values = event.get(name)
        for value in values if isinstance(values, list) else [values]:
            if value is None:
                continue
            found = find_meeting_url(str(value), extra_hosts=extra_hosts)
            if found is not None:
                return found
    return None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
