"""BotSchedule end to end: real control plane, `kubectl apply`, the operator as users run it, the
local meeting server and a local ICS feed (loopback, admitted by --extra-feed-hosts). Nothing is
mocked; every wait is bounded (`kubectl wait`, a watch on the API server)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from localcluster.bots import Bots
from localcluster.ics import IcsServerProcess
from localcluster.meeting import MeetingServerProcess
from localcluster.operator import OperatorProcess
from localcluster.testing import Cluster
from scheduledbot.timestamps import format_time

pytestmark = pytest.mark.cluster

FEED_LABEL = "meetingbots.dev/calendar-feed"


def schedule(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "meetingbots.dev/v1alpha1",
        "kind": "BotSchedule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"timeZone": "UTC", **spec},
    }


def apply(cluster: Cluster, body: dict[str, Any], *, check: bool = True) -> Any:
    return cluster.kubectl("apply", "-f", "-", input=json.dumps(body), check=check)


def get(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
    body: dict[str, Any] = json.loads(out)
    return body


def children(cluster: Cluster, namespace: str, schedule_name: str) -> dict[str, dict[str, Any]]:
    out = cluster.kubectl(
        "get", "scheduledbots", "-n", namespace, "-l", f"meetingbots.dev/botschedule={schedule_name}", "-o", "json"
    ).stdout
    return {item["metadata"]["name"]: item for item in json.loads(out)["items"]}


def wait(cluster: Cluster, namespace: str, target: str, condition: str, *, timeout: float = 60) -> None:
    """`kubectl wait --for=<condition>` on one object (`create`, `delete`, `jsonpath=...`, `condition=...`)."""
    result = cluster.kubectl(
        "wait", f"--for={condition}", f"--timeout={int(timeout)}s", target, "-n", namespace,
        check=False, timeout=timeout + 15,
    )  # fmt: skip
    if result.returncode != 0:
        shown = cluster.kubectl("get", target, "-n", namespace, "-o", "yaml", check=False).stdout
        raise AssertionError(f"{target}: not {condition} within {timeout:g} s\n{result.stderr}\n{shown}")


def feed_child(schedule_name: str, key: str) -> str:
    """A feed child's name: the event's UID (and for a recurring event its original start), hashed."""
    return f"{schedule_name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def test_an_rrule_every_minute_creates_children_ahead_that_join_in_turn(
    make_operator: Callable[..., OperatorProcess],
    cluster: Cluster,
    namespace: str,
    bots: Bots,
    meeting_server: MeetingServerProcess,
) -> None:
    make_operator()
    now = datetime.now(UTC)
    # The first occurrence at least 30 s away: its child is created, staged and joins on time.
    first = (now + timedelta(seconds=90)).replace(second=0, microsecond=0)
    occurrences = [first + timedelta(minutes=i) for i in range(3)]
    meeting = f"{namespace}-minutely"
    horizon = 240
    apply(
        cluster,
        schedule(
            "every-minute",
            namespace,
            rrule={"dtstart": first.strftime("%Y-%m-%dT%H:%M:%S"), "rule": "FREQ=MINUTELY"},
            horizonSeconds=horizon,
            botTemplate={
                "metadata": {"labels": {"team": "e2e"}},
                "spec": {
                    "meetingUrl": meeting_server.meeting_url(meeting),
                    "botName": "Minutes",
                    "stagingLeadSeconds": 10,
                    "maxDurationSeconds": 60,
                },
            },
        ),
    )
    names = [f"every-minute-{int(moment.timestamp())}" for moment in occurrences]
    for name in names:
        wait(cluster, namespace, f"scheduledbot/{name}", "create", timeout=30)
    owner = get(cluster, namespace, "botschedule", "every-minute")
    made = children(cluster, namespace, "every-minute")
    applied_at = now
    assert all(
        datetime.fromisoformat(bot["metadata"]["annotations"]["meetingbots.dev/occurrence"].replace("Z", "+00:00"))
        < applied_at + timedelta(seconds=horizon + 30)
        for bot in made.values()
    ), "only occurrences within the horizon have children"
    for name, moment in zip(names, occurrences, strict=True):
        bot = made[name]
        assert bot["spec"]["joinAt"] == format_time(moment)
        assert bot["metadata"]["labels"]["team"] == "e2e"
        (reference,) = bot["metadata"]["ownerReferences"]
        assert (reference["kind"], reference["uid"], reference["controller"]) == (
            "BotSchedule",
            owner["metadata"]["uid"],
            True,
        )
    status = owner.get("status") or {}
    assert status.get("next") and status["next"][0]["time"] == format_time(occurrences[0])

    for name in names:
        bots.wait_state(name, "joined", timeout=(occurrences[-1] - datetime.now(UTC)).total_seconds() + 60)
    arrivals = bots.arrivals(meeting)
    assert len(arrivals) >= 3
    lateness = [arrival["timestamp"] - moment.timestamp() for arrival, moment in zip(arrivals, occurrences)]  # noqa: B905
    print(f"\narrival lateness against each occurrence (s): {[round(x, 3) for x in lateness]}")
    assert all(0 <= late < 5 for late in lateness), "each child joins at its occurrence, not before"
    wait(
        cluster,
        namespace,
        "botschedule/every-minute",
        f"jsonpath={{.status.lastScheduleTime}}={format_time(occurrences[-1])}",
    )


def test_suspend_deletes_the_waiting_children_and_resume_creates_them_again(
    make_operator: Callable[..., OperatorProcess],
    cluster: Cluster,
    namespace: str,
    meeting_server: MeetingServerProcess,
) -> None:
    make_operator()
    body = schedule(
        "hourly",
        namespace,
        cron="0 * * * *",
        horizonSeconds=6 * 3600,
        startingDeadlineSeconds=0,  # so that exactly the six coming hours have children
        botTemplate={
            "spec": {"meetingUrl": meeting_server.meeting_url(f"{namespace}-hourly"), "stagingLeadSeconds": 10}
        },
    )
    apply(cluster, body)
    later = (datetime.now(UTC) + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    name = f"hourly-{int(later.timestamp())}"
    wait(cluster, namespace, f"scheduledbot/{name}", "create", timeout=30)
    wait(cluster, namespace, "botschedule/hourly", "jsonpath={.status.activeCount}=6")
    before = children(cluster, namespace, "hourly")
    assert len(before) == 6

    body["spec"]["suspend"] = True
    apply(cluster, body)
    wait(cluster, namespace, "botschedule/hourly", "jsonpath={.status.conditions[?(@.type=='Ready')].reason}=Suspended")
    wait(cluster, namespace, f"scheduledbot/{name}", "delete", timeout=30)
    # Only a staged child (its Pod warming up, seconds before the hour) would be kept.
    kept = children(cluster, namespace, "hourly")
    assert all(bot.get("status", {}).get("state") == "staged" for bot in kept.values()), kept
    assert len(kept) <= 1

    body["spec"]["suspend"] = False
    apply(cluster, body)
    wait(cluster, namespace, f"scheduledbot/{name}", "create", timeout=30)
    # The same names: a resumed schedule makes the same children, not new ones.
    wait(cluster, namespace, "botschedule/hourly", "jsonpath={.status.activeCount}=6")
    assert set(children(cluster, namespace, "hourly")) == set(before)


@pytest.fixture
def ics() -> Iterator[IcsServerProcess]:
    with IcsServerProcess() as server:
        yield server


def test_a_feed_creates_children_moves_deletes_and_keeps_them_when_it_fails(
    make_operator: Callable[..., OperatorProcess],
    cluster: Cluster,
    namespace: str,
    meeting_server: MeetingServerProcess,
    ics: IcsServerProcess,
) -> None:
    feed_host = ics.base_url.split("://", 1)[1]
    make_operator(args=[f"--extra-feed-hosts={feed_host}"])
    now = datetime.now(UTC).replace(microsecond=0)
    at = {minutes: now + timedelta(minutes=minutes) for minutes in (10, 15, 20, 25, 30)}
    link = meeting_server.meeting_url
    ics.add_event("team", uid="a@e2e", summary="Planning", start=at[10].isoformat(), location=link(f"{namespace}-a"))
    ics.add_event("team", uid="b@e2e", summary="Retro", start=at[15].isoformat(), conference=link(f"{namespace}-b"))
    ics.add_event(
        "team", uid="c@e2e", summary="Daily", start=at[20].isoformat(), rrule="FREQ=DAILY",
        description=f"Join: {link(f'{namespace}-c')}",
    )  # fmt: skip
    ics.add_event("team", uid="x@e2e", summary="No link", start=at[25].isoformat())

    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "team-calendar", "namespace": namespace},
        "stringData": {"url": ics.feed_url("team")},
    }
    apply(cluster, secret)
    body = schedule(
        "team",
        namespace,
        ical={"urlSecretRef": {"name": "team-calendar", "key": "url"}, "pollIntervalSeconds": 3600},
        horizonSeconds=3600,
        botTemplate={"spec": {"botName": "Notes", "stagingLeadSeconds": 60}},
    )
    refused = apply(cluster, body, check=False)
    assert refused.returncode != 0
    assert "spec.ical.urlSecretRef" in refused.stderr and FEED_LABEL in refused.stderr, refused.stderr
    cluster.kubectl("label", "secret", "team-calendar", "-n", namespace, f"{FEED_LABEL}=true")
    apply(cluster, body)

    a, b = feed_child("team", "a@e2e"), feed_child("team", "b@e2e")
    c = feed_child("team", f"c@e2e|{at[20].strftime('%Y%m%dT%H%M%SZ')}")
    for name in (a, b, c):
        wait(cluster, namespace, f"scheduledbot/{name}", "create", timeout=30)
    made = children(cluster, namespace, "team")
    assert set(made) == {a, b, c}, "the event without a supported link gets no bot"
    assert made[a]["spec"]["meetingUrl"] == link(f"{namespace}-a")
    assert made[b]["spec"]["meetingUrl"] == link(f"{namespace}-b")
    assert made[c]["spec"]["meetingUrl"] == link(f"{namespace}-c")
    assert made[a]["spec"]["joinAt"] == format_time(at[10])
    assert made[a]["metadata"]["annotations"]["meetingbots.dev/ical-uid"] == "a@e2e"
    wait(cluster, namespace, "botschedule/team", "condition=SourceHealthy=True")
    status = get(cluster, namespace, "botschedule", "team")["status"]
    assert any(entry.get("skipped") and "no meeting link" in entry["skipped"] for entry in status.get("skipped") or [])

    def refresh(value: str) -> None:
        cluster.kubectl(
            "annotate", "--overwrite", "botschedule", "team", "-n", namespace, f"meetingbots.dev/refresh={value}"
        )

    # Moved, cancelled, one occurrence of a series moved: patched, deleted, patched (same children).
    ics.move("team", "a@e2e", start=at[30].isoformat())
    ics.cancel("team", "b@e2e")
    ics.move("team", "c@e2e", start=at[25].isoformat(), recurrenceId=at[20].isoformat())
    refresh("1")
    wait(cluster, namespace, f"scheduledbot/{a}", f"jsonpath={{.spec.joinAt}}={format_time(at[30])}")
    wait(cluster, namespace, f"scheduledbot/{b}", "delete")
    wait(cluster, namespace, f"scheduledbot/{c}", f"jsonpath={{.spec.joinAt}}={format_time(at[25])}")
    moved = get(cluster, namespace, "scheduledbot", c)["metadata"]["annotations"]
    assert moved["meetingbots.dev/ical-recurrence-id"] == format_time(at[20])
    assert int(moved["meetingbots.dev/ical-sequence"]) >= 1

    # The feed fails: nothing is deleted, even an event that vanished meanwhile.
    ics.fail(500)
    ics.call("DELETE", "/admin/c/team/events/a@e2e")
    refresh("2")
    wait(cluster, namespace, "botschedule/team", "condition=SourceHealthy=False")
    condition = next(
        c
        for c in get(cluster, namespace, "botschedule", "team")["status"]["conditions"]
        if c["type"] == "SourceHealthy"
    )
    assert "500" in condition["message"] and ics.feed_url("team") not in condition["message"]
    assert set(children(cluster, namespace, "team")) == {a, c}, "a failing feed deletes nothing"

    # It answers again: the vanished event's child goes.
    ics.fail(None)
    refresh("3")
    wait(cluster, namespace, f"scheduledbot/{a}", "delete")
    wait(cluster, namespace, "botschedule/team", "condition=SourceHealthy=True")
    requests = ics.call("GET", "/admin/c/team/requests")
    assert any(r["ifNoneMatch"] for r in requests), "later reads are conditional (ETag)"

    cluster.kubectl("delete", "botschedule", "team", "-n", namespace, "--wait=false")
    wait(cluster, namespace, f"scheduledbot/{c}", "delete", timeout=60)
    assert children(cluster, namespace, "team") == {}


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        pytest.param({"cron": "61 9 * * *"}, "spec.cron", "not a valid cron schedule", id="cron"),
        pytest.param(
            {"rrule": {"dtstart": "2030-01-07T09:00:00", "rule": "FREQ=WEEKLY;BYDAY=XX"}},
            "spec.rrule.rule",
            "",
            id="rrule",
        ),
        pytest.param(
            {"rrule": {"dtstart": "2020-01-06T09:00:00", "rule": "FREQ=WEEKLY;COUNT=2"}},
            "spec.rrule",
            "has no occurrence after now",
            id="rrule-ran-out",
        ),
    ],
)
def test_the_webhook_refuses_what_only_code_can_check_naming_the_field(
    operator: OperatorProcess,
    cluster: Cluster,
    namespace: str,
    meeting_server: MeetingServerProcess,
    spec: dict[str, Any],
    field: str,
    words: str,
) -> None:
    body = schedule(
        "bad", namespace, botTemplate={"spec": {"meetingUrl": meeting_server.meeting_url(f"{namespace}-bad")}}, **spec
    )
    refused = apply(cluster, body, check=False)
    assert refused.returncode != 0, "admitted"
    assert f"{field}:" in refused.stderr and words in refused.stderr, refused.stderr
    assert "validate.botschedules.meetingbots.dev" in refused.stderr
