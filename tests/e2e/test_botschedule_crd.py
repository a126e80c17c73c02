"""The BotSchedule CRD on the local API server, without the operator: what CEL and the schema
refuse by themselves (so they hold while the operator is down), with messages that name the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from localcluster.testing import Cluster
from scheduledbot.core.schedule_children import observe_bot
from scheduledbot.core.schedule_model import CreateChild, FeedState, observe_schedule
from scheduledbot.core.schedule_plan import plan_schedule

URL = "https://zoom.us/j/123456789"


@pytest.fixture(scope="module")
def botschedules(cluster: Cluster, crd: None) -> None:
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/botschedules.meetingbots.dev")


def manifest(name: str = "standup", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "timeZone": "Europe/Berlin",
        "cron": "0 9 * * 1-5",
        "botTemplate": {"spec": {"meetingUrl": URL}},
    }
    body.update(spec)
    for key in [key for key, value in body.items() if value is None]:
        del body[key]
    return {"apiVersion": "meetingbots.dev/v1alpha1", "kind": "BotSchedule", "metadata": {"name": name}, "spec": body}


def apply(cluster: Cluster, namespace: str, body: dict[str, Any]) -> tuple[int, str]:
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
    return result.returncode, result.stderr


def test_a_valid_schedule_is_stored_with_its_defaults_and_listed_with_its_columns(
    cluster: Cluster, namespace: str, botschedules: None
) -> None:
    code, stderr = apply(cluster, namespace, manifest())
    assert code == 0, stderr
    stored = json.loads(cluster.kubectl("get", "bsched", "standup", "-n", namespace, "-o", "json").stdout)
    spec = stored["spec"]
    assert (spec["horizonSeconds"], spec["startingDeadlineSeconds"], spec["concurrencyPolicy"]) == (86400, 300, "Allow")
    assert spec["botTemplate"]["spec"]["botName"] == "Meeting Bot"
    table = cluster.kubectl("get", "meetingbots", "-n", namespace).stdout
    header = table.splitlines()[0].split()
    assert header[:2] == ["NAME", "SOURCE"] and "SUSPENDED" in header and "ACTIVE" in header


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            manifest(rrule={"dtstart": "2026-03-02T09:00:00", "rule": "FREQ=WEEKLY"}),
            "exactly one of spec.cron, spec.rrule and spec.ical must be set",
            id="two sources",
        ),
        pytest.param(manifest(cron=None), "exactly one of spec.cron, spec.rrule and spec.ical must be set", id="none"),
        pytest.param(manifest(timeZone=None), "spec.timeZone: Required value", id="no time zone"),
        pytest.param(manifest(timeZone="Europe Berlin"), "is not a time zone name", id="a zone name's shape"),
        pytest.param(manifest(cron="0 9 * *"), "spec.cron: Invalid value", id="four cron fields"),
        pytest.param(manifest(cron="CRON_TZ=UTC 0 9 * * *"), "must have five fields", id="CRON_TZ"),
        pytest.param(
            manifest(botTemplate={"spec": {"botName": "Notes"}}),
            "spec.botTemplate.spec.meetingUrl is required for cron and rrule schedules",
            id="cron without a meeting",
        ),
        pytest.param(
            manifest(cron=None, rrule={"dtstart": "2026-03-02T09:00:00Z", "rule": "FREQ=WEEKLY"}),
            "must be a local date-time",
            id="a dtstart with an offset",
        ),
        pytest.param(
            manifest(cron=None, rrule={"dtstart": "2026-03-02T09:00:00", "rule": "FREQ=DAILY\nEXDATE:20260303"}),
            "must be one RRULE value on one line",
            id="a second line in the rule",
        ),
        pytest.param(
            manifest(horizonSeconds=29 * 86400), "spec.horizonSeconds: Invalid value", id="horizon over 28 days"
        ),
        pytest.param(manifest(concurrencyPolicy="Sometimes"), 'Unsupported value: "Sometimes"', id="a policy"),
        pytest.param(manifest(name="a" * 53), "metadata.name must be at most 52 characters", id="a long name"),
        pytest.param(
            manifest(cron=None, ical={"urlSecretRef": {"name": "Calendar!", "key": "url"}}),
            "spec.ical.urlSecretRef.name",
            id="a Secret name",
        ),
        pytest.param(
            manifest(botTemplate={"spec": {"meetingUrl": "ftp://zoom.us/j/1"}}),
            "must be an https URL of a supported meeting platform",
            id="the template's meeting URL: ScheduledBot's own rule",
        ),
    ],
)
def test_cel_and_the_schema_refuse_what_needs_no_clock(
    cluster: Cluster, namespace: str, botschedules: None, body: dict[str, Any], expected: str
) -> None:
    code, stderr = apply(cluster, namespace, body)
    assert code != 0
    assert expected in stderr, stderr


def test_a_feed_schedule_needs_no_meeting_url(cluster: Cluster, namespace: str, botschedules: None) -> None:
    body = manifest(cron=None, ical={"urlSecretRef": {"name": "calendar", "key": "url"}}, botTemplate={"spec": {}})
    code, stderr = apply(cluster, namespace, body)
    assert code == 0, stderr


def test_the_status_the_planner_writes_passes_the_schema(cluster: Cluster, namespace: str, botschedules: None) -> None:
    code, stderr = apply(cluster, namespace, manifest(cron="*/5 * * * *", horizonSeconds=86400))
    assert code == 0, stderr
    stored = json.loads(cluster.kubectl("get", "bsched", "standup", "-n", namespace, "-o", "json").stdout)
    view = observe_schedule(stored, extra_hosts=frozenset())
    now = datetime.now(UTC)
    plan = plan_schedule(schedule=view, bots=[], now=now, feed=FeedState(feed=None))
    children = [
        observe_bot({**a.body, "metadata": {**a.body["metadata"], "uid": "x"}})
        for a in plan.actions
        if isinstance(a, CreateChild)
    ]
    assert len(children) == 200  # the cap
    status = plan.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert len(status["next"]) == 10 and status["activeCount"] == 200
    patch = json.dumps({"status": status})
    result = cluster.kubectl(
        "patch", "bsched", "standup", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch, check=False
    )
    assert result.returncode == 0, result.stderr
    table = cluster.kubectl("get", "bsched", "standup", "-n", namespace).stdout.splitlines()
    assert "cron */5 * * * *" in table[1] and "200" in table[1]


def test_a_failing_feeds_status_passes_the_schema(cluster: Cluster, namespace: str, botschedules: None) -> None:
    body = manifest(cron=None, ical={"urlSecretRef": {"name": "calendar", "key": "url"}}, botTemplate={"spec": {}})
    code, stderr = apply(cluster, namespace, body)
    assert code == 0, stderr
    stored = json.loads(cluster.kubectl("get", "bsched", "standup", "-n", namespace, "-o", "json").stdout)
    now = datetime.now(UTC)
    failing = FeedState(feed=None, error="HTTP 500 from calendar.example.com", attempted_at=now, failures=1)
    plan = plan_schedule(schedule=observe_schedule(stored, extra_hosts=frozenset()), bots=[], now=now, feed=failing)
    status = plan.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert {c["type"]: c["status"] for c in status["conditions"]}["SourceHealthy"] == "False"
    patch = json.dumps({"status": status})
    result = cluster.kubectl(
        "patch", "bsched", "standup", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (
        cluster.kubectl("wait", "bsched/standup", "-n", namespace, "--for=condition=Stalled", "--timeout=5s").returncode
        == 0
    )
