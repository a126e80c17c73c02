"""spec.notify and status.notifications on the real API server: what `kubectl apply` accepts and refuses without
the operator (CRD schema and CEL), and that what the core writes into the status is what the schema allows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from scheduledbot.api.models import BotState, ScheduledBotStatus
from scheduledbot.core.notify import Attempt, RetryPolicy, Sink, plan_delivery, record_change

pytestmark = pytest.mark.cluster

SINK: dict[str, Any] = {
    "url": "https://hooks.example.com/bots?token=1",
    "signingKeySecretRef": {"name": "hooks", "key": "key"},
}


def bot(namespace: str, name: str, notify: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "meetingbots.dev/v1alpha1",
            "kind": "ScheduledBot",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"meetingUrl": "https://zoom.us/j/123456789", "joinAt": "2031-01-01T00:00:00Z", "notify": notify},
        }
    )


def test_a_sink_with_its_key_and_filter_is_accepted_and_explained(cluster: Any, crd: None, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=bot(namespace, "good", {**SINK, "events": ["joined", "failed"]}))
    got = json.loads(cluster.kubectl("get", "sbot", "good", "-n", namespace, "-o", "json").stdout)
    assert got["spec"]["notify"] == {**SINK, "events": ["joined", "failed"], "enabled": True}
    explained = cluster.kubectl("explain", "scheduledbot.spec.notify.signingKeySecretRef").stdout
    assert "meetingbots.dev/notify-signing-key" in explained


@pytest.mark.parametrize(
    ("notify", "expected"),
    [
        pytest.param({"url": SINK["url"]}, "url and signingKeySecretRef come together", id="a url without its key"),
        pytest.param({**SINK, "url": "ftp://hooks.example.com/x"}, "must be an https URL", id="not http(s)"),
        pytest.param({**SINK, "events": ["joind"]}, 'Unsupported value: "joind"', id="an unknown state"),
        pytest.param({**SINK, "events": ["joined", "joined"]}, 'Duplicate value: "joined"', id="a state twice"),
    ],
)
def test_a_bad_sink_is_refused_by_the_api_server_naming_the_field(
    cluster: Any, crd: None, namespace: str, notify: dict[str, Any], expected: str
) -> None:
    result = cluster.kubectl("apply", "-f", "-", input=bot(namespace, "bad", notify), check=False)
    assert result.returncode != 0
    assert "spec.notify" in result.stderr and expected in result.stderr, result.stderr


def test_the_status_the_core_writes_is_one_the_schema_accepts(cluster: Any, crd: None, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=bot(namespace, "writer", SINK))
    sink = Sink(url=SINK["url"], key_ref=None)
    now = datetime.now(UTC)
    status = ScheduledBotStatus()
    for state in (BotState.SCHEDULED, BotState.STAGED, BotState.JOINING):
        status = record_change(before=status, after=status.model_copy(update={"state": state}), sink=sink, now=now)
    decided = plan_delivery(
        uid="uid",
        notifications=status.notifications,
        sink=sink,
        attempt=Attempt(id="uid.1", status=404, detail="no such hook"),
        in_flight=False,
        policy=RetryPolicy(),
        jitter=0.5,
        now=now,
    )
    written = status.model_copy(update={"notifications": decided.notifications})
    patch = {"status": written.model_dump(by_alias=True, exclude_none=True, mode="json")}
    cluster.kubectl(
        "patch", "sbot", "writer", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(patch)
    )
    got = json.loads(cluster.kubectl("get", "sbot", "writer", "-n", namespace, "-o", "json").stdout)
    assert ScheduledBotStatus.model_validate(got["status"]) == written
    bad = {"status": {"notifications": {"sequence": 1, "pending": [{"sequence": 1, "state": "x", "at": "now"}]}}}
    result = cluster.kubectl(
        "patch",
        "sbot",
        "writer",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(bad),
        check=False,
    )
    assert result.returncode != 0 and "status.notifications.pending[0]" in result.stderr, result.stderr
