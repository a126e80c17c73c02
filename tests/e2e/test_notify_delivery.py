"""Notifications end to end: the operator as users run it delivers each bot's state changes to the local receiver.

Real control plane, `kubectl apply`, the local kubelet and meeting server, the
receiver of tools/localcluster on loopback (admitted with --extra-notify-hosts).
Each signature is verified here with `standardwebhooks`, on the bytes received.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from localcluster.bots import Bots, parse_time, soon
from localcluster.operator import OperatorProcess
from localcluster.receiver import Answer, WebhookReceiverProcess
from localcluster.waiting import until

pytestmark = pytest.mark.cluster

SECRET = "bot-hooks"
LABEL = "meetingbots.dev/notify-signing-key"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiverProcess]:
    with WebhookReceiverProcess() as process:
        yield process


@pytest.fixture
def notifying(
    make_operator: Callable[..., OperatorProcess], receiver: WebhookReceiverProcess
) -> Callable[..., OperatorProcess]:
    """Makes operators that admit the receiver's host (and nothing else) as a sink over http."""
    admitted = receiver.base_url.removeprefix("http://")
    return lambda **options: make_operator(args=["--extra-notify-hosts", admitted], **options)


def signing_secret(bots: Bots, key: str, *, labelled: bool = True) -> None:
    labels = {LABEL: "true"} if labelled else {}
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": bots.namespace, "labels": labels},
        "stringData": {"signing-key": key},
    }
    bots.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def notify(receiver: WebhookReceiverProcess, name: str, **extra: Any) -> dict[str, Any]:
    return {"url": receiver.url(name), "signingKeySecretRef": {"name": SECRET, "key": "signing-key"}, **extra}


def verified_event(key: str, attempt: dict[str, Any]) -> dict[str, Any]:
    """The CloudEvent of one attempt, after checking its Standard Webhooks signature on the bytes received."""
    headers = {
        "webhook-id": attempt["id"],
        "webhook-timestamp": attempt["timestamp"],
        "webhook-signature": attempt["signature"],
    }
    event: dict[str, Any] = Webhook(key).verify(attempt["body"], headers)
    return event


def notifications(bots: Bots, name: str) -> dict[str, Any]:
    found: dict[str, Any] = bots.status(name).get("notifications") or {}
    return found


def condition(bots: Bots, name: str, type_: str) -> dict[str, Any] | None:
    return next((c for c in bots.status(name).get("conditions") or [] if c["type"] == type_), None)


def test_a_bots_changes_arrive_in_order_signed_and_the_outbox_empties(
    notifying: Callable[..., OperatorProcess], receiver: WebhookReceiverProcess, bots: Bots
) -> None:
    notifying()
    signing_secret(bots, receiver.key)
    bots.apply(bots.manifest("standup", join_at=soon(10), lead=6, notify=notify(receiver, "standup")))
    bots.wait_state("standup", "recording", timeout=40)
    bots.admin(f"{bots.namespace}-standup", "end")
    bots.wait_state("standup", "ended", timeout=20)
    sequence = bots.status("standup")["notifications"]["sequence"]
    deliveries = receiver.deliveries(count=sequence, timeout=30)

    events = [verified_event(receiver.key, attempt) for attempt in deliveries]
    states = [event["data"]["state"] for event in events]
    assert states[:4] == ["scheduled", "staged", "joining", "joined"] and states[-1] == "ended", states
    assert "recording" in states
    assert [event["data"]["sequence"] for event in events] == list(range(1, sequence + 1)), "each change once, in order"
    uid = bots.get("standup")["metadata"]["uid"]
    assert [event["id"] for event in events] == [f"{uid}.{n}" for n in range(1, sequence + 1)]
    first, last = events[0], events[-1]
    assert first["type"] == "dev.meetingbots.scheduledbot.state_changed"
    assert first["source"].endswith(f"/namespaces/{bots.namespace}/scheduledbots/standup")
    assert first["data"]["previousState"] is None and last["data"]["previousState"] == states[-2]
    joined = events[states.index("joined")]["data"]
    assert joined["joinedBy"] == "signal" and joined["joinLatenessMs"] is not None
    assert all(attempt["contentType"] == "application/cloudevents+json" for attempt in deliveries)

    # The outbox shrinks to nothing in the API server (nested keys removed by the status patch).
    until(lambda: "pending" not in notifications(bots, "standup"), timeout=10, what="an empty outbox")
    state = notifications(bots, "standup")
    assert state["lastDelivered"]["sequence"] == sequence and state["lastDelivered"]["attempts"] == 1
    assert "nextAttemptAt" not in state and "failures" not in state
    failing = condition(bots, "standup", "NotificationsFailing")
    assert failing is not None and failing["status"] == "False"
    assert receiver.key.removeprefix("whsec_") not in json.dumps(bots.get("standup"))


def test_a_sink_that_fails_twice_gets_the_change_once_under_one_id(
    notifying: Callable[..., OperatorProcess], receiver: WebhookReceiverProcess, bots: Bots
) -> None:
    operator = notifying()
    signing_secret(bots, receiver.key)
    receiver.script(Answer(status=500), Answer(status=500))
    bots.apply(
        bots.manifest("retry", join_at=soon(600), lead=60, notify=notify(receiver, "retry", events=["scheduled"]))
    )
    (delivered,) = receiver.deliveries(count=1, timeout=40)

    attempts = receiver.attempts()
    assert [a["status"] for a in attempts] == [500, 500, 200]
    assert {a["id"] for a in attempts} == {delivered["id"]}, "one id in every retry"
    assert all(verified_event(receiver.key, a)["data"]["state"] == "scheduled" for a in attempts)
    gaps = [
        (parse_time(b["receivedAt"]) - parse_time(a["receivedAt"])).total_seconds()
        for a, b in itertools.pairwise(attempts)
    ]
    assert gaps[0] >= 2.5 and gaps[1] >= 5.0, f"back-off of 5 s then 10 s, less at most half by jitter: {gaps}"

    until(lambda: "pending" not in notifications(bots, "retry"), timeout=10, what="the delivery recorded")
    state = notifications(bots, "retry")
    assert state["lastDelivered"]["attempts"] == 3 and state["lastDelivered"]["id"] == delivered["id"]
    assert "failures" not in state and "lastError" not in state
    failing = [e for e in bots.events("retry") if e["reason"] == "NotificationsFailing"]
    assert len(failing) == 1 and "HTTP 500" in failing[0]["message"] and failing[0]["type"] == "Warning"
    scraped = operator.metrics()
    assert scraped.get("scheduledbot_notification_attempts_total", outcome="retry") == 2
    assert scraped.get("scheduledbot_notification_attempts_total", outcome="delivered") == 1
    assert scraped.get("scheduledbot_notifications_pending") == 0


def test_a_sink_that_answers_400_is_not_retried_and_the_failure_is_recorded(
    notifying: Callable[..., OperatorProcess], receiver: WebhookReceiverProcess, bots: Bots
) -> None:
    notifying()
    signing_secret(bots, receiver.key)
    receiver.script(Answer(status=400))
    bots.apply(bots.manifest("reject", join_at=soon(600), lead=60, notify=notify(receiver, "reject")))
    bots.wait_for("reject", ".status.notifications.lastFailure.reason", "Rejected", timeout=20)
    state = notifications(bots, "reject")
    (attempt,) = receiver.attempts()
    assert state["lastFailure"]["id"] == attempt["id"] and state["lastFailure"]["state"] == "scheduled"
    assert state["lastFailure"]["message"].startswith("HTTP 400") and state["dropped"] == 1
    assert "pending" not in state
    failing = condition(bots, "reject", "NotificationsFailing")
    assert failing is not None and failing["status"] == "True" and "HTTP 400" in failing["message"]
    dropped = [e for e in bots.events("reject") if e["reason"] == "NotificationDropped"]
    assert len(dropped) == 1 and "Rejected" in dropped[0]["message"]
    # A retry would come within 5 s (the first back-off); nothing comes.
    time.sleep(6)
    assert len(receiver.attempts()) == 1


def test_a_secret_without_the_label_is_not_used_and_the_status_says_why(
    notifying: Callable[..., OperatorProcess], receiver: WebhookReceiverProcess, bots: Bots
) -> None:
    notifying()
    signing_secret(bots, receiver.key, labelled=False)
    bots.apply(bots.manifest("unlabelled", join_at=soon(600), lead=60, notify=notify(receiver, "unlabelled")))
    until(lambda: "lastError" in notifications(bots, "unlabelled"), timeout=20, what="a recorded error")
    error = notifications(bots, "unlabelled")["lastError"]
    assert error.startswith("no signing key: Secret") and f'lacks the label {LABEL}: "true"' in error, error
    assert receiver.attempts() == [], "nothing is sent unsigned"
    assert receiver.key.removeprefix("whsec_") not in json.dumps(bots.get("unlabelled"))


def test_a_sink_the_policy_refuses_is_refused_at_apply_naming_the_field(
    notifying: Callable[..., OperatorProcess], receiver: WebhookReceiverProcess, bots: Bots
) -> None:
    notifying()
    sink = {"url": "https://169.254.169.254/latest/meta-data", "signingKeySecretRef": {"name": SECRET, "key": "k"}}
    result = bots.apply(bots.manifest("metadata", join_at=soon(600), notify=sink), check=False)
    assert result.returncode != 0
    assert "spec.notify.url: " in result.stderr and "link-local" in result.stderr, result.stderr


def test_a_delivery_pending_when_the_operator_is_killed_arrives_after_its_restart_under_the_same_id(
    notifying: Callable[..., OperatorProcess], receiver: WebhookReceiverProcess, bots: Bots
) -> None:
    operator = notifying()
    signing_secret(bots, receiver.key)
    receiver.script(Answer(status=503, hang=True))
    bots.apply(bots.manifest("restart", join_at=soon(600), lead=60, notify=notify(receiver, "restart")))
    hung = first_attempt(receiver)
    operator.kill()
    pending = notifications(bots, "restart")["pending"]
    assert [f"{bots.get('restart')['metadata']['uid']}.{p['sequence']}" for p in pending] == [hung["id"]]

    operator.start()
    (delivered,) = receiver.deliveries(count=1, timeout=30)
    assert delivered["id"] == hung["id"]
    assert verified_event(receiver.key, delivered)["data"]["state"] == "scheduled"
    until(lambda: "pending" not in notifications(bots, "restart"), timeout=10, what="the delivery recorded")


def first_attempt(receiver: WebhookReceiverProcess) -> dict[str, Any]:
    until(lambda: len(receiver.attempts()) >= 1, timeout=20, what="the first attempt")
    return receiver.attempts()[0]
