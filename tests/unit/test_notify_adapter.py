"""A notification on the wire: the CloudEvent envelope, the Standard Webhooks signature (checked against the
published test vector and by the library's own verifier), and each kind of answer as the retry policy sees it,
against the local receiver on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_structured_event
from standardwebhooks import Webhook, WebhookVerificationError

from localcluster.receiver import Answer, WebhookReceiver, new_key
from scheduledbot.adapters.egress import EgressClient, EgressPolicy
from scheduledbot.adapters.notify import (
    CONTENT_TYPE,
    EVENT_TYPE,
    Notifier,
    build_event,
    envelope,
    event_source,
    excerpt,
    retry_after_seconds,
    signature_headers,
)
from scheduledbot.api.models import BotState, JoinedBy
from scheduledbot.api.notify import Notice, parse_signing_key
from scheduledbot.core.notify import Attempt, Deliver, Failure, Verdict, classify

pytestmark = pytest.mark.timeout(20)

UID = "6f1c2d9e-4b1a-4c4e-9d7e-1f0a2b3c4d5e"
DELIVERY = Deliver(
    id=f"{UID}.4",
    notice=Notice(
        sequence=4,
        state=BotState.JOINING,
        previous_state=BotState.STAGED,
        at="2026-01-01T10:00:00.004Z",
        reason="JoinSignaled",
        message="join signal sent 4 ms after joinAt",
        join_at="2026-01-01T10:00:00Z",
        join_signaled_at="2026-01-01T10:00:00.004Z",
        join_lateness_ms=4,
        joined_by=JoinedBy.SIGNAL,
    ),
    not_before=None,
    attempt=1,
)
BOT: dict[str, Any] = {"name": "standup", "namespace": "team", "uid": UID, "meeting_url": "https://zoom.us/j/123"}


def test_the_signature_matches_the_standard_webhooks_test_vector() -> None:
    # The vector every Standard Webhooks library tests its `sign` against.
    key = parse_signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", source="vector")
    headers = signature_headers(
        key=key,
        message_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=datetime.fromtimestamp(1614265330, tz=UTC),
        body=b'{"test": 2432232314}',
    )
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


def test_the_timestamp_is_the_same_instant_whatever_the_offset() -> None:
    key = parse_signing_key(new_key(), source="test")
    utc = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    other = utc.astimezone(datetime.now().astimezone().tzinfo or UTC)
    body = b"{}"
    assert signature_headers(key=key, message_id="m", timestamp=utc, body=body) == signature_headers(
        key=key, message_id="m", timestamp=other, body=body
    )


def test_the_body_is_a_structured_cloudevent_with_the_change() -> None:
    body = envelope(build_event(delivery=DELIVERY, **BOT))
    event = from_structured_event(HTTPMessage(headers={"content-type": CONTENT_TYPE}, body=body))
    assert event.get_attributes() == {
        "specversion": "1.0",
        "id": f"{UID}.4",
        "source": "/apis/meetingbots.dev/v1alpha1/namespaces/team/scheduledbots/standup",
        "type": EVENT_TYPE,
        "subject": "joining",
        "time": datetime(2026, 1, 1, 10, 0, 0, 4000, tzinfo=UTC),
        "datacontenttype": "application/json",
    }
    assert event.get_data() == {
        "name": "standup",
        "namespace": "team",
        "uid": UID,
        "sequence": 4,
        "previousState": "staged",
        "state": "joining",
        "reason": "JoinSignaled",
        "message": "join signal sent 4 ms after joinAt",
        "joinAt": "2026-01-01T10:00:00Z",
        "joinSignaledAt": "2026-01-01T10:00:00.004Z",
        "joinLatenessMs": 4,
        "joinedBy": "signal",
        "meetingUrl": "https://zoom.us/j/123",
        "coalesced": 0,
    }
    assert event_source(namespace="team", name="standup") == event.get_source()


def test_a_signed_notification_verifies_with_the_standard_webhooks_library() -> None:
    secret = new_key()
    key = parse_signing_key(secret, source="test")
    body = envelope(build_event(delivery=DELIVERY, **BOT))
    headers = signature_headers(key=key, message_id=DELIVERY.id, timestamp=datetime.now(UTC), body=body)
    doc = Webhook(secret).verify(body, headers)
    assert doc["id"] == headers["webhook-id"] == f"{UID}.4"
    assert doc["data"]["state"] == "joining"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"joining", b"joined!"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_key()).verify(body, headers)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("120", 120.0, id="delay-seconds"),
        pytest.param(" 7 ", 7.0, id="with spaces"),
        pytest.param("Thu, 01 Jan 2026 10:01:30 GMT", 90.0, id="an HTTP date"),
        pytest.param("Thu, 01 Jan 2026 09:00:00 GMT", 0.0, id="a date in the past"),
        pytest.param("soon", None, id="unreadable"),
        pytest.param("-5", None, id="negative"),
    ],
)
def test_retry_after_is_read_as_seconds_or_as_a_date(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=datetime(2026, 1, 1, 10, 0, tzinfo=UTC)) == seconds


def test_a_sinks_answer_reaches_the_status_only_as_a_short_printable_excerpt() -> None:
    text = excerpt(b"bad \x1b[31msignature\x00\n" + b"x" * 10_000)
    assert text.startswith("bad [31msignature x") and len(text) == 200 and text.isprintable()


# -- delivering to the local receiver -----------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
async def notifier(receiver: WebhookReceiver) -> AsyncIterator[Notifier]:
    policy = EgressPolicy(admitted_hosts=frozenset({f"127.0.0.1:{receiver.port}"}))
    async with EgressClient(policy=policy, timeout_seconds=1.0) as client:
        yield Notifier(client)


async def send(notifier: Notifier, receiver: WebhookReceiver, *, key: str | None = None) -> Attempt:
    signing = parse_signing_key(key or receiver.key, source="test")
    return await notifier.deliver(DELIVERY, url=receiver.url("bots"), key=signing, **BOT)


async def test_a_delivery_arrives_verified_and_is_delivered(notifier: Notifier, receiver: WebhookReceiver) -> None:
    attempt = await send(notifier, receiver)
    assert attempt == Attempt(id=f"{UID}.4", status=200)
    assert classify(attempt) is Verdict.DELIVERED
    [delivery] = receiver.deliveries
    assert (delivery["id"], delivery["verified"], delivery["contentType"]) == (f"{UID}.4", True, CONTENT_TYPE)
    assert delivery["event"]["data"]["state"] == "joining"
    assert receiver.key not in json.dumps(receiver.attempts)


async def test_a_wrong_key_is_refused_by_the_receiver_and_not_retried(
    notifier: Notifier, receiver: WebhookReceiver
) -> None:
    attempt = await send(notifier, receiver, key=new_key())
    assert (attempt.status, classify(attempt)) == (401, Verdict.REJECTED)
    assert "signature not verified" in attempt.detail
    assert receiver.attempts[0]["verified"] is False and receiver.deliveries == []


@pytest.mark.parametrize(
    ("answer", "status", "retry_after", "verdict"),
    [
        pytest.param(Answer(status=500), 500, None, Verdict.RETRY, id="500: retry"),
        pytest.param(Answer(status=503, retry_after="7"), 503, 7.0, Verdict.RETRY, id="503 with Retry-After"),
        pytest.param(Answer(status=429, retry_after="2"), 429, 2.0, Verdict.RETRY, id="429 with Retry-After"),
        pytest.param(Answer(status=410), 410, None, Verdict.GONE, id="410: gone"),
        pytest.param(Answer(status=404), 404, None, Verdict.REJECTED, id="404: rejected"),
    ],
)
async def test_each_answer_is_reported_for_the_retry_policy(
    notifier: Notifier,
    receiver: WebhookReceiver,
    answer: Answer,
    status: int,
    retry_after: float | None,
    verdict: Verdict,
) -> None:
    receiver.script(answer)
    attempt = await send(notifier, receiver)
    assert (attempt.status, attempt.retry_after_seconds, classify(attempt)) == (status, retry_after, verdict)


async def test_a_receiver_that_never_answers_is_a_connection_failure(
    notifier: Notifier, receiver: WebhookReceiver
) -> None:
    receiver.script(Answer(hang=True))
    attempt = await send(notifier, receiver)
    assert (attempt.status, attempt.failure, classify(attempt)) == (None, Failure.CONNECTION, Verdict.RETRY)
    assert attempt.detail == f"http://127.0.0.1:{receiver.port}/…: no answer within 1 s"


async def test_a_sink_the_policy_refuses_is_reported_without_sending(receiver: WebhookReceiver) -> None:
    async with EgressClient(policy=EgressPolicy()) as client:
        attempt = await send(Notifier(client), receiver)
    assert (attempt.failure, classify(attempt)) == (Failure.REFUSED, Verdict.RETRY)
    assert "only https is allowed" in attempt.detail
    assert receiver.attempts == []


async def test_retries_carry_the_same_id_and_a_fresh_timestamp(receiver: WebhookReceiver) -> None:
    # The receiver checks timestamps against the real clock, within five minutes: stay inside that.
    now = [datetime.now(UTC) - timedelta(seconds=30)]
    policy = EgressPolicy(admitted_hosts=frozenset({f"127.0.0.1:{receiver.port}"}))
    async with EgressClient(policy=policy) as client:
        notifier = Notifier(client, clock=lambda: now[0])
        receiver.script(Answer(status=500))
        first = await send(notifier, receiver)
        now[0] += timedelta(seconds=30)
        second = await send(notifier, receiver)
    assert (first.status, second.status) == (500, 200)
    assert [attempt["id"] for attempt in receiver.attempts] == [f"{UID}.4", f"{UID}.4"]
    stamps = [int(attempt["timestamp"]) for attempt in receiver.attempts]
    assert stamps[1] - stamps[0] == 30
