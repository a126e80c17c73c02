"""Table tests of `plan_schedule` on a fixed clock: no cluster, no sleeping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduledbot.api.models import BotState
from scheduledbot.api.schedule import BotScheduleStatus, parse_schedule_spec
from scheduledbot.core.model import Emit, EventType
from scheduledbot.core.occurrences import parse_feed
from scheduledbot.core.schedule_children import OCCURRENCE_ANNOTATION, SCHEDULE_LABEL, BotRef, observe_bot
from scheduledbot.core.schedule_model import (
    CreateChild,
    DeleteChild,
    FeedState,
    PatchChild,
    SchedulePlan,
    ScheduleView,
    observe_schedule,
)
from scheduledbot.core.schedule_plan import LATE_JOIN_MARGIN, MAX_PLANNED, plan_schedule

URL = "https://zoom.us/j/123456789"
#: Monday 2026-03-02, 08:00 in Berlin (CET): the daily 09:00 meeting is an hour away.
NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
NINE = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def schedule(
    spec: Mapping[str, Any] | None = None,
    *,
    status: Mapping[str, Any] | None = None,
    created: datetime = NOW - timedelta(minutes=1),
    name: str = "standup",
    uid: str = "s-1",
) -> ScheduleView:
    raw: dict[str, Any] = {
        "timeZone": "Europe/Berlin",
        "cron": "0 9 * * *",
        "botTemplate": {"spec": {"meetingUrl": URL}},
        "horizonSeconds": 86400,
    }
    raw |= spec or {}
    if "rrule" in raw or "ical" in raw:
        raw.pop("cron", None)
    return ScheduleView(
        name=name,
        namespace="team",
        uid=uid,
        generation=1,
        created_at=created,
        deleted_at=None,
        spec=parse_schedule_spec(raw, extra_hosts=frozenset()),
        spec_error=None,
        status=BotScheduleStatus.model_validate(status or {}),
    )


def run(sched: ScheduleView, bots: Sequence[BotRef] = (), *, now: datetime = NOW, **kw: Any) -> SchedulePlan:
    return plan_schedule(schedule=sched, bots=bots, now=now, **kw)


def creates(plan: SchedulePlan) -> list[Mapping[str, Any]]:
    return [a.body for a in plan.actions if isinstance(a, CreateChild)]


def created_times(plan: SchedulePlan) -> list[str]:
    return [body["spec"]["joinAt"] for body in creates(plan)]


def deletes(plan: SchedulePlan) -> list[str]:
    return [a.name for a in plan.actions if isinstance(a, DeleteChild)]


def patches(plan: SchedulePlan) -> list[PatchChild]:
    return [a for a in plan.actions if isinstance(a, PatchChild)]


def events(plan: SchedulePlan) -> list[str]:
    return [a.reason for a in plan.actions if isinstance(a, Emit)]


def observe(
    body: Mapping[str, Any],
    *,
    state: BotState | None = BotState.SCHEDULED,
    ended: datetime | None = None,
    deleting: bool = False,
    spec: Mapping[str, Any] | None = None,
) -> BotRef:
    """A child as the cache would show it after its creation (and the ScheduledBot machinery's progress)."""
    metadata = dict(body["metadata"], uid=f"uid-{body['metadata']['name']}")
    if deleting:
        metadata["deletionTimestamp"] = iso(NOW)
    status: dict[str, Any] = {"state": state.value} if state else {}
    if ended is not None:
        status["endedAt"] = iso(ended)
    return observe_bot({**body, "metadata": metadata, "spec": {**body["spec"], **(spec or {})}, "status": status})


def children(sched: ScheduleView, *, now: datetime = NOW, feed: FeedState | None = None, **kw: Any) -> list[BotRef]:
    """The children a first pass creates, observed."""
    return [observe(body, **kw) for body in creates(run(sched, now=now, feed=feed))]


def hand_written(join_at: datetime, url: str = URL, *, name: str = "manual") -> BotRef:
    return observe_bot(
        {
            "metadata": {"name": name, "uid": f"uid-{name}"},
            "spec": {"meetingUrl": url, "joinAt": iso(join_at)},
            "status": {"state": "scheduled"},
        }
    )


# --- creation ----------------------------------------------------------------------------------


def test_children_are_created_for_the_occurrences_within_the_horizon() -> None:
    plan = run(schedule())
    [body] = creates(plan)
    assert body == {
        "apiVersion": "meetingbots.dev/v1alpha1",
        "kind": "ScheduledBot",
        "metadata": {
            "name": f"standup-{int(NINE.timestamp())}",
            "namespace": "team",
            "labels": {SCHEDULE_LABEL: "standup"},
            "annotations": {OCCURRENCE_ANNOTATION: "2026-03-02T08:00:00Z"},
            "ownerReferences": [
                {
                    "apiVersion": "meetingbots.dev/v1alpha1",
                    "kind": "BotSchedule",
                    "name": "standup",
                    "uid": "s-1",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"meetingUrl": URL, "botName": "Meeting Bot", "joinAt": "2026-03-02T08:00:00Z"},
    }
    # The next occurrence (tomorrow 09:00) enters the horizon tomorrow 08:00 UTC; status.next refreshes at 08:00 today.
    assert plan.wake_at == NINE
    assert plan.status.next is not None and plan.status.next[0].name == body["metadata"]["name"]
    assert plan.status.active_count == 1 and plan.status.source == "cron 0 9 * * *"


def test_the_template_labels_annotations_and_fields_reach_every_child() -> None:
    template = {
        "metadata": {"labels": {"team": "sales"}, "annotations": {"note": "x"}},
        "spec": {"meetingUrl": URL, "botName": "Notes", "stagingLeadSeconds": 600, "botConfig": {"record": True}},
    }
    [body] = creates(run(schedule({"botTemplate": template})))
    assert body["metadata"]["labels"] == {"team": "sales", SCHEDULE_LABEL: "standup"}
    assert body["metadata"]["annotations"]["note"] == "x"
    assert body["spec"] == {
        "meetingUrl": URL,
        "botName": "Notes",
        "stagingLeadSeconds": 600,
        "botConfig": {"record": True},
        "joinAt": "2026-03-02T08:00:00Z",
    }


def test_a_restart_creates_the_same_children_and_nothing_once_they_exist() -> None:
    sched = schedule({"horizonSeconds": 7 * 86400})
    first, again = run(sched), run(sched)
    assert creates(first) == creates(again) and len(creates(first)) == 7
    quiet = run(sched, children(sched))
    assert quiet.actions == ()
    assert quiet.status.active_count == 7


def test_the_status_is_stable_between_passes_so_a_pass_never_causes_another() -> None:
    sched = schedule({"horizonSeconds": 3 * 86400})
    kids = children(sched)
    first = run(sched, kids)
    second = run(
        ScheduleView(**{**vars_of(sched), "status": first.status}),
        kids,
        now=NOW + timedelta(seconds=7),
    )
    assert second.status == first.status and second.actions == ()


def vars_of(view: ScheduleView) -> dict[str, Any]:
    return {field: getattr(view, field) for field in view.__dataclass_fields__}


def test_dst_a_daily_nine_oclock_child_joins_at_nine_local_after_spring_forward() -> None:
    sched = schedule({"horizonSeconds": 3 * 86400}, created=datetime(2026, 3, 27, 12, tzinfo=UTC))
    plan = run(sched, now=datetime(2026, 3, 27, 12, tzinfo=UTC))
    assert created_times(plan) == ["2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z"]


def test_at_most_max_planned_occurrences_have_children_at_once() -> None:
    plan = run(schedule({"cron": "* * * * *", "horizonSeconds": 28 * 86400}, created=NOW))
    assert len(creates(plan)) == MAX_PLANNED
    assert plan.wake_at == NOW + timedelta(minutes=1)


# --- following the source -----------------------------------------------------------------------


def test_an_edited_rrule_deletes_the_old_occurrences_children_and_creates_the_new() -> None:
    before = schedule({"rrule": {"dtstart": "2026-03-02T09:00:00", "rule": "FREQ=DAILY"}})
    kids = children(before)
    after = schedule({"rrule": {"dtstart": "2026-03-02T09:30:00", "rule": "FREQ=DAILY"}})
    plan = run(after, kids)
    assert deletes(plan) == [kids[0].name]
    assert created_times(plan) == ["2026-03-02T08:30:00Z"]


def test_a_template_edit_patches_scheduled_children_and_recreates_staged_ones() -> None:
    sched = schedule({"horizonSeconds": 2 * 86400})
    scheduled, staged = children(sched)
    staged = observe(creates(run(sched))[1], state=BotState.STAGED)
    edited = schedule({"horizonSeconds": 2 * 86400, "botTemplate": {"spec": {"meetingUrl": URL, "botName": "Notes"}}})
    plan = run(edited, [scheduled, staged])
    [patch] = patches(plan)
    assert patch.name == scheduled.name and patch.uid == scheduled.uid
    assert patch.spec == {"meetingUrl": URL, "botName": "Notes", "joinAt": "2026-03-02T08:00:00Z"}
    # The staged bot's Pod was built from the old spec: it is created again by the next pass.
    assert deletes(plan) == [staged.name]


def test_fields_a_newer_crd_adds_to_a_child_are_left_alone() -> None:
    sched = schedule()
    kids = children(sched, spec={"someFutureField": {"x": 1}})
    assert run(sched, kids).actions == ()


def test_children_joining_or_in_a_meeting_are_never_touched() -> None:
    sched = schedule()
    for state in (BotState.JOINING, BotState.WAITING_ROOM, BotState.JOINED, BotState.RECORDING, BotState.LEAVING):
        kids = children(sched, state=state)
        # Suspended, edited and with its occurrence gone: still left alone.
        other = schedule({"cron": "30 10 * * *", "suspend": True, "botTemplate": {"spec": {"meetingUrl": URL}}})
        for view in (sched, other):
            plan = run(view, kids, now=NINE + timedelta(minutes=5))
            assert not deletes(plan) and not patches(plan), (state, view.spec)
            assert kids[0].name not in [body["metadata"]["name"] for body in creates(plan)]


FEED = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//EN
BEGIN:VEVENT
UID:sync@example.com
DTSTART;TZID=Europe/Berlin:20260302T100000
RRULE:FREQ=DAILY;COUNT=5
SUMMARY:Sync
LOCATION:https://meet.google.com/abc-defg-hij
END:VEVENT
BEGIN:VEVENT
UID:review@example.com
DTSTART;TZID=Europe/Berlin:20260302T140000
SUMMARY:Review
DESCRIPTION:https://zoom.us/j/987654321
END:VEVENT
END:VCALENDAR
"""
OVERRIDE = """BEGIN:VEVENT
UID:sync@example.com
RECURRENCE-ID;TZID=Europe/Berlin:20260302T100000
DTSTART;TZID=Europe/Berlin:20260302T113000
SUMMARY:Sync (later)
LOCATION:https://meet.google.com/abc-defg-hij
SEQUENCE:1
END:VEVENT
"""
CANCELLED_OVERRIDE = """BEGIN:VEVENT
UID:sync@example.com
RECURRENCE-ID;TZID=Europe/Berlin:20260302T100000
DTSTART;TZID=Europe/Berlin:20260302T100000
STATUS:CANCELLED
END:VEVENT
"""
ICAL = {"ical": {"urlSecretRef": {"name": "calendar", "key": "url"}}, "botTemplate": {"spec": {}}}


def feed_state(text: str = FEED, **kw: Any) -> FeedState:
    return FeedState(feed=parse_feed(text), fetched_at=NOW - timedelta(minutes=1), attempted_at=NOW, **kw)


def with_event(event: str, text: str = FEED) -> str:
    """The feed with `event` listed first (before its master, as some servers do)."""
    return text.replace("BEGIN:VEVENT", event + "BEGIN:VEVENT", 1)


def test_a_feed_creates_one_child_per_event_occurrence_with_the_events_link() -> None:
    plan = run(schedule(ICAL), feed=feed_state())
    bodies = creates(plan)
    assert [(b["spec"]["joinAt"], b["spec"]["meetingUrl"]) for b in bodies] == [
        ("2026-03-02T09:00:00Z", "https://meet.google.com/abc-defg-hij"),
        ("2026-03-02T13:00:00Z", "https://zoom.us/j/987654321"),
    ]
    annotations = bodies[0]["metadata"]["annotations"]
    assert annotations["meetingbots.dev/ical-uid"] == "sync@example.com"
    assert annotations["meetingbots.dev/ical-recurrence-id"] == "2026-03-02T09:00:00Z"
    assert plan.fetch_at == NOW - timedelta(minutes=1) + timedelta(seconds=300)
    assert plan.status.last_sync_time == iso(NOW - timedelta(minutes=1))


@pytest.mark.parametrize("state", [BotState.SCHEDULED, BotState.STAGED])
def test_a_moved_occurrence_keeps_its_child_and_patches_join_at(state: BotState) -> None:
    sched = schedule(ICAL)
    kids = children(sched, feed=feed_state(), state=state)
    plan = run(sched, kids, feed=feed_state(with_event(OVERRIDE)))
    [patch] = patches(plan)
    assert patch.name == kids[0].name  # same UID and RECURRENCE-ID: the same child
    assert patch.spec["joinAt"] == "2026-03-02T10:30:00Z"
    assert patch.annotations[OCCURRENCE_ANNOTATION] == "2026-03-02T10:30:00Z"
    assert patch.annotations["meetingbots.dev/ical-sequence"] == "1"
    assert not deletes(plan) and not creates(plan)


def test_a_cancelled_override_deletes_that_occurrences_child_only() -> None:
    sched = schedule(ICAL, status={"plannedThrough": iso(NOW)})
    kids = children(sched, feed=feed_state())
    plan = run(sched, kids, feed=feed_state(with_event(CANCELLED_OVERRIDE)))
    assert deletes(plan) == [kids[0].name]
    assert "DeletedChild" in events(plan)


def test_a_cancelled_master_deletes_the_series_children() -> None:
    sched = schedule(ICAL | {"horizonSeconds": 3 * 86400})
    kids = children(sched, feed=feed_state())
    cancelled = FEED.replace("RRULE:FREQ=DAILY;COUNT=5", "RRULE:FREQ=DAILY;COUNT=5\nSTATUS:CANCELLED")
    plan = run(sched, kids, feed=feed_state(cancelled))
    sync = [k.name for k in kids if k.spec["meetingUrl"].startswith("https://meet")]
    assert len(sync) == 3 and sorted(deletes(plan)) == sorted(sync)


def test_a_vanished_event_deletes_its_pending_child_but_not_one_in_the_meeting() -> None:
    sched = schedule(ICAL)
    sync, _ = children(sched, feed=feed_state())
    review_joined = observe(creates(run(sched, feed=feed_state()))[1], state=BotState.JOINED)
    without = FEED.replace(FEED[FEED.index("BEGIN:VEVENT\nUID:review") : FEED.index("END:VCALENDAR")], "")
    without = without.replace(FEED[FEED.index("BEGIN:VEVENT\nUID:sync") : FEED.index("BEGIN:VEVENT\nUID:review")], "")
    plan = run(sched, [sync, review_joined], feed=feed_state(without))
    assert deletes(plan) == [sync.name]


def test_a_feed_that_fails_deletes_nothing_and_says_why() -> None:
    sched = schedule(ICAL)
    kids = children(sched, feed=feed_state())
    empty = "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//test//EN\nEND:VCALENDAR\n"
    failing = FeedState(
        feed=parse_feed(empty), fetched_at=NOW - DAY, error="HTTP 500 from calendar.example.com", attempted_at=NOW
    )
    plan = run(sched, kids, feed=failing)
    assert not deletes(plan) and not patches(plan)
    conditions = {c.type: (c.status.value, c.reason) for c in plan.status.conditions or []}
    assert conditions["SourceHealthy"] == ("False", "ReadFailed")
    assert conditions["Ready"] == ("False", "SourceUnhealthy")
    assert "SourceUnhealthy" in events(plan)
    assert plan.fetch_at == NOW + timedelta(seconds=10)  # the first retry comes soon, not after the poll interval


def test_a_feed_never_read_creates_nothing_and_asks_for_a_read_now() -> None:
    plan = run(schedule(ICAL), feed=None)
    assert plan.actions == () and plan.fetch_at == NOW
    conditions = {c.type: (c.status.value, c.reason) for c in plan.status.conditions or []}
    assert conditions["Ready"] == ("False", "WaitingForFeed")
    assert conditions["Reconciling"] == ("True", "WaitingForFeed")
    assert conditions["SourceHealthy"] == ("Unknown", "NotRead")


def test_failed_reads_back_off_up_to_the_poll_interval() -> None:
    failing = FeedState(feed=None, error="timeout", attempted_at=NOW, failures=30)
    plan = run(schedule(ICAL), feed=failing)
    assert plan.fetch_at == NOW + timedelta(seconds=300)
    # Failing from the first read on: unhealthy (Stalled, with the reason), not merely waiting.
    conditions = {c.type: (c.status.value, c.reason) for c in plan.status.conditions or []}
    assert conditions["Stalled"] == ("True", "SourceUnhealthy") and conditions["Reconciling"][0] == "False"
    assert plan.actions == (
        Emit(type=EventType.WARNING, reason="SourceUnhealthy", message="the feed cannot be read: timeout"),
    )


def test_an_event_without_a_supported_link_gets_no_bot_and_is_reported() -> None:
    text = FEED.replace("DESCRIPTION:https://zoom.us/j/987654321", "DESCRIPTION:in room 4")
    plan = run(schedule(ICAL), feed=feed_state(text))
    assert len(creates(plan)) == 1
    assert plan.status.skipped is not None
    assert plan.status.skipped[0].skipped == "the event has no meeting link of a supported platform"


# --- time: downtime, settled, history ----------------------------------------------------------


def test_after_downtime_occurrences_past_the_deadline_are_missed_with_one_event() -> None:
    # Every 10 minutes; the operator was away from 05:00 to 07:00 (planned through 05:00).
    sched = schedule(
        {"cron": "*/10 * * * *", "startingDeadlineSeconds": 300, "horizonSeconds": 600},
        created=NOW - DAY,
        status={"plannedThrough": iso(NOW - timedelta(hours=2)), "missedCount": 4},
    )
    now = NOW + timedelta(minutes=2)
    plan = run(sched, now=now)
    # 05:10 ... 06:50 are 11 occurrences more than 300 s late; 07:00 is 2 minutes late: created, joining at once.
    assert plan.status.missed_count == 4 + 11
    assert events(plan).count("MissedOccurrences") == 1
    assert created_times(plan) == [iso(now + LATE_JOIN_MARGIN), "2026-03-02T07:10:00Z"]
    late = creates(plan)[0]
    assert late["metadata"]["annotations"][OCCURRENCE_ANNOTATION] == "2026-03-02T07:00:00Z"
    assert late["metadata"]["name"] == f"standup-{int(NOW.timestamp())}"  # named after the occurrence, not joinAt
    # The next pass counts nothing again.
    again = run(ScheduleView(**{**vars_of(sched), "status": plan.status}), now=now + timedelta(seconds=1))
    assert "MissedOccurrences" not in events(again)


def test_of_the_occurrences_that_began_without_a_bot_only_the_latest_is_created() -> None:
    # A meeting every minute, the operator back after 4 minutes away: one bot joins now, not four.
    sched = schedule(
        {"cron": "* * * * *", "horizonSeconds": 60},
        created=NOW - DAY,
        status={"plannedThrough": iso(NOW - timedelta(minutes=4))},
    )
    plan = run(sched, now=NOW + timedelta(seconds=30))
    assert [b["metadata"]["annotations"][OCCURRENCE_ANNOTATION] for b in creates(plan)] == [
        "2026-03-02T07:00:00Z",
        "2026-03-02T07:01:00Z",
    ]
    assert created_times(plan)[0] == iso(NOW + timedelta(seconds=30) + LATE_JOIN_MARGIN)
    assert plan.status.missed_count == 4 and events(plan).count("MissedOccurrences") == 1  # 06:56 to 06:59
    # The next pass sees the created children and the settled misses: nothing more.
    kids = [observe(body) for body in creates(plan)]
    again = run(ScheduleView(**{**vars_of(sched), "status": plan.status}), kids, now=NOW + timedelta(seconds=31))
    assert again.actions == () and again.status.missed_count == 4


def test_a_late_child_keeps_its_late_join_at() -> None:
    sched = schedule({"cron": "*/10 * * * *"}, status={"plannedThrough": iso(NOW)})
    now = NOW + timedelta(minutes=1)
    [late] = [
        observe(b) for b in creates(run(sched, now=now)) if b["metadata"]["name"].endswith(str(int(NOW.timestamp())))
    ]
    assert late.join_at == now + LATE_JOIN_MARGIN
    assert not patches(run(sched, [late], now=now + timedelta(seconds=2)))


def test_a_settled_occurrence_is_never_created_again() -> None:
    sched = schedule({"cron": "*/10 * * * *", "startingDeadlineSeconds": 3600, "horizonSeconds": 600})
    [first] = children(sched)
    done = observe(creates(run(sched))[0], state=BotState.FAILED, ended=NOW + timedelta(seconds=30))
    after = run(sched, [done], now=NOW + timedelta(minutes=1))
    settled = after.status.settled or []
    assert (first.name, "2026-03-02T07:00:00Z") in [(s.name, s.time) for s in settled]
    # Pruned by the history limit, the occurrence is still within the deadline, and still not created again.
    pruned = ScheduleView(**{**vars_of(sched), "status": after.status})
    plan = run(pruned, [], now=NOW + timedelta(minutes=2))
    assert first.name not in [b["metadata"]["name"] for b in creates(plan)]


def test_history_keeps_the_newest_by_the_limits() -> None:
    sched = schedule({"cron": "0 * * * *", "successfulHistoryLimit": 2, "failedHistoryLimit": 1})
    past = [NOW - timedelta(hours=h) for h in range(1, 8)]
    bodies = [
        {
            "metadata": {
                "name": f"standup-{int(t.timestamp())}",
                "annotations": {OCCURRENCE_ANNOTATION: iso(t)},
                "ownerReferences": [
                    {
                        "apiVersion": "meetingbots.dev/v1alpha1",
                        "kind": "BotSchedule",
                        "name": "standup",
                        "uid": "s-1",
                        "controller": True,
                    }
                ],
            },
            "spec": {"meetingUrl": URL, "joinAt": iso(t)},
        }
        for t in past
    ]
    ended = [
        observe(b, state=BotState.ENDED, ended=t + timedelta(minutes=30))
        for b, t in zip(bodies[:4], past[:4], strict=True)
    ]
    failed = [
        observe(b, state=BotState.FAILED, ended=t + timedelta(minutes=1))
        for b, t in zip(bodies[4:], past[4:], strict=True)
    ]
    plan = run(sched, [*ended, *failed])
    assert sorted(deletes(plan)) == sorted([ended[2].name, ended[3].name, failed[1].name, failed[2].name])
    assert plan.status.last_schedule_time == iso(past[0])


# --- duplicates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(hand_written(NINE), id="a hand-written bot"),
        pytest.param(hand_written(NINE, "https://us02web.zoom.us/j/123456789?utm_source=x"), id="an equivalent link"),
    ],
)
def test_a_hand_written_bot_for_the_same_meeting_and_time_wins(other: BotRef) -> None:
    plan = run(schedule(), [other])
    assert not creates(plan)
    assert events(plan) == ["DuplicateSkipped"]
    [skipped] = plan.status.skipped or []
    assert skipped.skipped is not None and "manual" in skipped.skipped
    # Reported once: the next pass, with this status, emits no second Event.
    again = run(ScheduleView(**{**vars_of(schedule()), "status": plan.status}), [other])
    assert "DuplicateSkipped" not in events(again)


def test_a_hand_written_bot_at_another_time_is_no_duplicate() -> None:
    assert len(creates(run(schedule(), [hand_written(NINE + timedelta(minutes=1))]))) == 1


def test_between_two_schedules_the_first_name_keeps_the_meeting() -> None:
    alpha = schedule(name="alpha", uid="a-1")
    [alphas_child] = children(alpha)
    beta = schedule(name="beta", uid="b-1")
    assert not creates(run(beta, [alphas_child]))
    # Both created it at once (before either saw the other): beta deletes its own, alpha keeps its.
    [betas_child] = children(beta)
    assert deletes(run(beta, [alphas_child, betas_child])) == [betas_child.name]
    assert not deletes(run(alpha, [alphas_child, betas_child]))


def test_two_events_of_one_feed_for_the_same_meeting_and_time_make_one_child() -> None:
    twin = "BEGIN:VEVENT\nUID:copy@example.com\nDTSTART;TZID=Europe/Berlin:20260302T140000\nLOCATION:https://zoom.us/j/987654321\nEND:VEVENT\n"
    plan = run(schedule(ICAL), feed=feed_state(FEED.replace("END:VCALENDAR", twin + "END:VCALENDAR")))
    assert [b["spec"]["joinAt"] for b in creates(plan)] == ["2026-03-02T09:00:00Z", "2026-03-02T13:00:00Z"]


# --- suspend and concurrency --------------------------------------------------------------------


def test_suspend_deletes_children_not_yet_staged_keeps_the_rest_and_creates_nothing() -> None:
    sched = schedule({"horizonSeconds": 3 * 86400})
    kids = children(sched)
    kids[0] = observe(creates(run(sched))[0], state=BotState.STAGED)
    suspended = schedule({"horizonSeconds": 3 * 86400, "suspend": True})
    plan = run(suspended, kids)
    assert sorted(deletes(plan)) == sorted(k.name for k in kids[1:])
    assert not creates(run(suspended))
    assert plan.status.next is not None and plan.status.next[1].skipped == "the schedule is suspended"
    assert {c.type: c.reason for c in plan.status.conditions or []}["Ready"] == "Suspended"


def test_resuming_creates_nothing_past_its_deadline() -> None:
    # Suspended since yesterday 06:00 (planned through then); resumed now, at 07:02, a day and a bit later.
    sched = schedule(
        {"cron": "0 * * * *", "horizonSeconds": 3600, "startingDeadlineSeconds": 60},
        created=NOW - 2 * DAY,
        status={"plannedThrough": iso(NOW - DAY - timedelta(hours=1))},
    )
    now = NOW + timedelta(minutes=2)
    plan = run(sched, now=now)
    assert created_times(plan) == ["2026-03-02T08:00:00Z"]  # 07:00 is 120 s late: past the 60 s deadline
    assert plan.status.missed_count == 25


def running(sched: ScheduleView, start: datetime, state: BotState = BotState.JOINED) -> BotRef:
    """A child of `sched` for the occurrence at `start`, in the meeting."""
    [body] = [b for b in creates(run(sched, now=start - timedelta(minutes=1))) if b["spec"]["joinAt"] == iso(start)]
    return observe(body, state=state)


@pytest.mark.parametrize(
    ("policy", "before", "deleted", "created"),
    [
        pytest.param("Allow", 5, [], True, id="Allow: both bots"),
        pytest.param("Forbid", 60, [], True, id="Forbid, a minute before: not decided yet"),
        pytest.param("Forbid", 5, [], False, id="Forbid: the new occurrence is skipped"),
        pytest.param("Replace", 5, ["earlier"], True, id="Replace: the earlier bot is deleted (it leaves)"),
    ],
)
def test_concurrency_policy_for_an_earlier_bot_still_in_the_meeting(
    policy: str, before: int, deleted: list[str], created: bool
) -> None:
    sched = schedule({"cron": "0 * * * *", "concurrencyPolicy": policy, "horizonSeconds": 3600})
    earlier = running(sched, NOW)
    now = NINE - timedelta(seconds=before)
    plan = run(sched, [earlier], now=now)
    assert deletes(plan) == [earlier.name for _ in deleted]
    assert (iso(NINE) in created_times(plan)) is created
    if policy == "Forbid" and not created:
        assert plan.status.missed_count == 1 and "ConcurrencyForbid" in events(plan)
        assert (f"standup-{int(NINE.timestamp())}", iso(NINE)) in [(s.name, s.time) for s in plan.status.settled or []]
    if policy != "Allow" and before > 10:
        assert plan.wake_at == NINE - timedelta(seconds=10)


def test_forbid_deletes_the_new_occurrences_child_if_it_was_created_ahead() -> None:
    sched = schedule({"cron": "0 * * * *", "concurrencyPolicy": "Forbid", "horizonSeconds": 3600})
    earlier = running(sched, NOW)
    [waiting] = children(sched, now=NINE - timedelta(minutes=30), state=BotState.STAGED)
    assert waiting.instant == NINE
    plan = run(sched, [earlier, waiting], now=NINE - timedelta(seconds=5))
    assert deletes(plan) == [waiting.name]


# --- names, invalid specs -------------------------------------------------------------------------


def test_an_invalid_spec_stalls_with_one_event() -> None:
    view = ScheduleView(**{**vars_of(schedule()), "spec": None, "spec_error": "spec.cron: bad"})
    plan = run(view)
    assert events(plan) == ["InvalidSpec"]
    assert [a.message for a in plan.actions if isinstance(a, Emit)] == ["spec.cron: bad"]
    conditions = {c.type: (c.status.value, c.reason) for c in plan.status.conditions or []}
    assert conditions["Stalled"] == ("True", "InvalidSpec") and conditions["Ready"] == ("False", "InvalidSpec")
    again = run(ScheduleView(**{**vars_of(view), "status": plan.status}))
    assert again.actions == ()


def test_a_deleted_schedule_does_nothing_the_garbage_collector_does_it() -> None:
    view = ScheduleView(**{**vars_of(schedule()), "deleted_at": NOW})
    assert run(view).actions == ()


def test_a_schedule_is_read_from_its_body_and_a_bad_spec_is_kept_as_its_error() -> None:
    body: dict[str, Any] = {
        "metadata": {
            "name": "standup",
            "namespace": "team",
            "uid": "s-1",
            "generation": 3,
            "creationTimestamp": "2026-03-01T10:00:00Z",
        },
        "spec": {"timeZone": "Europe/Berlin", "cron": "0 9 * * *", "botTemplate": {"spec": {"meetingUrl": URL}}},
        "status": {"missedCount": 2, "conditions": "not a list"},
    }
    view = observe_schedule(body, extra_hosts=frozenset())
    assert (view.name, view.namespace, view.uid, view.generation) == ("standup", "team", "s-1", 3)
    assert view.created_at == datetime(2026, 3, 1, 10, tzinfo=UTC) and view.deleted_at is None
    assert view.spec is not None and view.spec_error is None
    assert view.status == BotScheduleStatus()  # unreadable: derived again by the next pass
    bad = observe_schedule({**body, "spec": {**body["spec"], "timeZone": "Mars/Olympus"}}, extra_hosts=frozenset())
    assert bad.spec is None and bad.spec_error is not None and bad.spec_error.startswith("spec.timeZone:")


def test_a_one_off_meeting_moved_after_its_bot_ended_gets_a_new_bot() -> None:
    # The review (one event, no recurrence) happened at 14:00 and was then moved to tomorrow.
    sched = schedule(ICAL)
    review = next(b for b in creates(run(sched, feed=feed_state())) if "zoom" in b["spec"]["meetingUrl"])
    ended = observe(review, state=BotState.ENDED, ended=NOW + timedelta(hours=7))
    later = NOW + timedelta(hours=8)
    moved = FEED.replace("DTSTART;TZID=Europe/Berlin:20260302T140000", "DTSTART;TZID=Europe/Berlin:20260303T140000")
    plan = run(sched, [ended], now=later, feed=feed_state(moved))
    assert deletes(plan) == [ended.name]  # the finished child makes room (it is settled at its old time)
    gone = ScheduleView(**{**vars_of(sched), "status": plan.status})
    again = run(gone, [], now=later + timedelta(seconds=1), feed=feed_state(moved))
    assert [b["spec"]["joinAt"] for b in creates(again) if b["metadata"]["name"] == ended.name] == [
        "2026-03-03T13:00:00Z"
    ]
