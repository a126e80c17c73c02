"""spec.notify parsing, the notifications status shape, and signing keys (which never show their value)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from scheduledbot.api.crd import build_crd
from scheduledbot.api.errors import SpecError
from scheduledbot.api.models import BotState, JoinedBy, ScheduledBotStatus, parse_spec
from scheduledbot.api.notify import (
    MAX_NOTICE_MESSAGE,
    MAX_PENDING,
    SIGNING_KEY_LABEL,
    DeliveredNotice,
    FailedNotice,
    Notice,
    NotificationsStatus,
    NotifySpec,
    SecretKeyRef,
    SigningKeyError,
    parse_signing_key,
    signing_key_from_secret,
)

ZOOM = {"meetingUrl": "https://zoom.us/j/123456789", "joinAt": "2030-06-16T16:24:00Z"}
SINK = {"url": "https://hooks.example.com/bots", "signingKeySecretRef": {"name": "bot-hooks", "key": "signing-key"}}
KEY_32 = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def parse(notify: Any) -> NotifySpec | None:
    return parse_spec({**ZOOM, "notify": notify}, extra_hosts=frozenset()).notify


def test_a_sink_with_its_key_and_a_filter_parses() -> None:
    notify = parse({**SINK, "events": ["joined", "failed"]})
    assert notify == NotifySpec(
        url="https://hooks.example.com/bots",
        signing_key_secret_ref=SecretKeyRef(name="bot-hooks", key="signing-key"),
        events=[BotState.JOINED, BotState.FAILED],
    )
    assert notify.enabled


def test_without_notify_the_spec_has_none() -> None:
    assert parse_spec(ZOOM, extra_hosts=frozenset()).notify is None


@pytest.mark.parametrize(
    ("notify", "problem"),
    [
        pytest.param(
            {"url": "https://hooks.example.com/bots"},
            "spec.notify: ",
            id="a url without its key",
        ),
        pytest.param(
            {"signingKeySecretRef": {"name": "k", "key": "k"}},
            "url and signingKeySecretRef come together",
            id="a key without a url",
        ),
        pytest.param({**SINK, "events": ["joind"]}, "spec.notify.events[0]: ", id="an unknown state"),
        pytest.param({**SINK, "events": []}, "spec.notify.events: ", id="an empty filter"),
        pytest.param({**SINK, "enabled": "yes"}, "spec.notify.enabled: ", id="enabled as a string"),
        pytest.param(
            {**SINK, "signingKeySecretRef": {"name": "Bad_Name", "key": "k"}},
            "spec.notify.signingKeySecretRef.name: ",
            id="a Secret name that is no DNS subdomain",
        ),
        pytest.param({**SINK, "url": "h" * 2049}, "spec.notify.url: ", id="a url over 2048 characters"),
    ],
)
def test_a_bad_notify_names_its_field(notify: dict[str, Any], problem: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse(notify)
    assert any(problem in message for message in raised.value.messages), raised.value.messages


def test_only_enabled_false_turns_notifications_off() -> None:
    notify = parse({"enabled": False})
    assert notify is not None and not notify.enabled and notify.url is None


def test_the_crd_checks_the_sink_without_the_operator() -> None:
    root = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    notify = root["properties"]["spec"]["properties"]["notify"]
    assert notify["x-kubernetes-validations"] == [
        {
            "rule": "has(self.url) == has(self.signingKeySecretRef)",
            "message": "url and signingKeySecretRef come together: a sink needs its signing key",
        }
    ]
    [url_rule] = notify["properties"]["url"]["x-kubernetes-validations"]
    assert "getScheme() in ['https', 'http']" in url_rule["rule"]
    assert notify["properties"]["events"]["x-kubernetes-list-type"] == "set"
    pending = root["properties"]["status"]["properties"]["notifications"]["properties"]["pending"]
    assert pending["maxItems"] == MAX_PENDING


def test_a_status_with_notifications_round_trips() -> None:
    doc = {
        "state": "joined",
        "notifications": {
            "sink": "3f2a9c1d0b7e4a65",
            "sequence": 5,
            "pending": [
                {
                    "sequence": 4,
                    "state": "joining",
                    "previousState": "staged",
                    "at": "2030-06-16T16:24:00.004Z",
                    "attempts": 2,
                },
                {"sequence": 5, "state": "joined", "previousState": "joining", "at": "2030-06-16T16:24:01Z"},
            ],
            "failures": 2,
            "nextAttemptAt": "2030-06-16T16:24:12Z",
            "lastDelivered": {
                "id": "uid-1.3",
                "sequence": 3,
                "state": "staged",
                "deliveredAt": "2030-06-16T16:19:00Z",
                "attempts": 1,
            },
        },
    }
    status = ScheduledBotStatus.model_validate(doc)
    assert status.notifications is not None and status.notifications.pending is not None
    assert [n.state for n in status.notifications.pending] == [BotState.JOINING, BotState.JOINED]
    assert status.model_dump(by_alias=True, exclude_none=True, mode="json") == doc


@pytest.mark.parametrize("size", [24, 32, 64])
def test_a_standard_webhooks_key_of_24_to_64_bytes_is_accepted(size: int) -> None:
    text = "whsec_" + base64.b64encode(bytes(size)).decode()
    assert parse_signing_key(f"  {text}\n", source="the key file").secret == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(base64.b64encode(bytes(32)).decode(), "must start with whsec_", id="no prefix"),
        pytest.param("whsec_not base64!", "not whsec_ followed by base64", id="not base64"),
        pytest.param("whsec_" + base64.b64encode(bytes(23)).decode(), "24 to 64 random bytes, got 23", id="short"),
        pytest.param("whsec_" + base64.b64encode(bytes(65)).decode(), "24 to 64 random bytes, got 65", id="long"),
    ],
)
def test_a_bad_key_is_refused_without_showing_it(text: str, problem: str) -> None:
    with pytest.raises(SigningKeyError) as raised:
        parse_signing_key(text, source="the key file")
    assert str(raised.value).startswith("the key file: ")
    assert problem in str(raised.value)
    assert text.removeprefix("whsec_") not in str(raised.value)


def _secret(*, labels: dict[str, str] | None, data: dict[str, str]) -> dict[str, Any]:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {"metadata": {"name": "bot-hooks", "namespace": "team", "labels": labels}, "data": encoded}


REF = SecretKeyRef(name="bot-hooks", key="signing-key")


def test_a_labelled_secret_gives_its_key() -> None:
    secret = _secret(labels={SIGNING_KEY_LABEL: "true"}, data={"signing-key": KEY_32})
    assert signing_key_from_secret(secret, ref=REF).secret == KEY_32


@pytest.mark.parametrize(
    ("labels", "data", "problem"),
    [
        pytest.param(
            None, {"signing-key": KEY_32}, "lacks the label meetingbots.dev/notify-signing-key", id="no label"
        ),
        pytest.param(
            {SIGNING_KEY_LABEL: "yes"}, {"signing-key": KEY_32}, "lacks the label", id="a label other than true"
        ),
        pytest.param({SIGNING_KEY_LABEL: "true"}, {"other": KEY_32}, "has no key 'signing-key'", id="no such key"),
        pytest.param(
            {SIGNING_KEY_LABEL: "true"}, {"signing-key": "hunter2hunter2"}, "must start with whsec_", id="not a key"
        ),
    ],
)
def test_a_secret_that_cannot_sign_is_named_in_the_error(
    labels: dict[str, str] | None, data: dict[str, str], problem: str
) -> None:
    with pytest.raises(SigningKeyError) as raised:
        signing_key_from_secret(_secret(labels=labels, data=data), ref=REF)
    assert str(raised.value).startswith("Secret team/bot-hooks")
    assert problem in str(raised.value)
    for value in data.values():
        assert value not in str(raised.value)


def test_a_key_never_prints_its_value() -> None:
    key = parse_signing_key(KEY_32, source="test")
    assert KEY_32 not in repr(key) and KEY_32 not in str(key)


def test_status_notifications_stay_small_even_filled_to_every_limit() -> None:
    stamp = "2026-01-01T10:00:00.123Z"
    full = Notice(
        sequence=10**9,
        state=BotState.WAITING_ROOM,
        previous_state=BotState.WAITING_ROOM,
        at=stamp,
        reason="R" * 1024,
        message="m" * MAX_NOTICE_MESSAGE,
        join_at=stamp,
        join_signaled_at=stamp,
        join_lateness_ms=10**9,
        joined_by=JoinedBy.DEADLINE,
        attempts=100,
        coalesced=1000,
    )
    failed = FailedNotice(
        id="x" * 128,
        sequence=1,
        state=BotState.FAILED,
        failed_at=stamp,
        attempts=50,
        reason="Expired",
        message="e" * 1024,
    )
    notes = NotificationsStatus(
        sink="a" * 16,
        sequence=10**9,
        pending=[full] * MAX_PENDING,
        failures=100,
        next_attempt_at=stamp,
        failing_since=stamp,
        last_error="e" * 1024,
        last_delivered=DeliveredNotice(id="x" * 128, sequence=1, state=BotState.ENDED, delivered_at=stamp, attempts=3),
        last_failure=failed,
        dropped=100,
    )
    size = len(json.dumps(notes.model_dump(by_alias=True, exclude_none=True, mode="json")))
    assert size <= 41 * 1024  # of the 1.5 MiB an object may have in etcd
