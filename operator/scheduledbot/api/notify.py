"""Notifications: where a ScheduledBot's state changes are sent, and how far their delivery got.

The spec side
=============
`spec.notify` names a sink (an https URL) and the Secret that holds its signing
key, and may narrow the states that are sent. Without it the operator's default
sink applies, if the operator has one; `enabled: false` turns notifications off
for the bot, the default sink included. The URL is checked here only for its form;
whether its host may be reached (https, no internal addresses, the administrator's
allowlist) needs the operator's settings and is decided by its egress policy.

The status side: an outbox in the status
========================================
Each state change is appended to `status.notifications.pending` in the very
status write that makes the change, so a change is recorded if and only if it
happened: an operator that restarts finds in the status exactly what is still to
be sent, in order. Nothing can be re-derived later, because the status keeps only
the current state. Delivery takes the head of the queue; after a success or a
give-up the head is removed by a later status write, so a crash in between sends
the head again with the same id (at least once, in order per bot).

Bounds: at most `MAX_PENDING` entries, each with a message of at most
`MAX_NOTICE_MESSAGE` characters; a whole lifecycle (scheduled to ended, with a
waiting room) is 8 changes. When changes outrun deliveries beyond that, the newest
pending entry absorbs the next change (`coalesced` counts how many it stands for),
so the oldest undelivered changes keep their order and ids, and the latest state
is always among those delivered. Every entry is given up after the retry window
(24 hours by default), so the queue also empties in time when its sink is down.

Signing keys are Secrets that opted in
======================================
The operator can read Secrets in every namespace, and a ScheduledBot's author may
be a tenant who cannot. So a Secret is used as a signing key only when it carries
the label `meetingbots.dev/notify-signing-key: "true"`: whoever labels it agreed
that it signs notifications. The key's value never reaches the status, an Event
or a log; `SigningKey` does not even print it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonValue

from scheduledbot.api.states import BotState, JoinedBy

MAX_SINK_URL_LENGTH: Final = 2048
#: A lifecycle is 8 changes (scheduled ... ended with a waiting room); twice that covers
#: reschedules and trips back to the waiting room. An entry is at most 2.4 KB (a reason
#: and a message of 1 KiB each), all of status.notifications at most 41 KB of the
#: object's 1.5 MiB; a typical entry is about 250 bytes.
MAX_PENDING: Final = 16
#: The message of a change as notified; status.message itself may be longer.
MAX_NOTICE_MESSAGE: Final = 1024
MAX_ERROR_LENGTH: Final = 1024
MAX_ID_LENGTH: Final = 128
_TIMESTAMP_LENGTH: Final = 64

#: The label by which a Secret's owner allows it to sign notifications.
SIGNING_KEY_LABEL: Final = "meetingbots.dev/notify-signing-key"
#: Standard Webhooks: random, 24 to 64 bytes, base64, prefixed `whsec_`.
SIGNING_KEY_PREFIX: Final = "whsec_"
MIN_KEY_BYTES: Final = 24
MAX_KEY_BYTES: Final = 64

_DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_SECRET_KEY: Final = r"^[-._a-zA-Z0-9]+$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)


def _url_rules() -> list[JsonValue]:
    return [
        {
            "rule": "isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != ''",
            "message": (
                "must be an https URL (http only for hosts the operator's administrator admitted with "
                "--extra-notify-hosts)"
            ),
        }
    ]


def _timestamp(description: str, *, required: bool = False) -> Any:
    extra: dict[str, JsonValue] = {"format": "date-time"}
    if required:
        return Field(max_length=_TIMESTAMP_LENGTH, description=description, json_schema_extra=extra)
    return Field(default=None, max_length=_TIMESTAMP_LENGTH, description=description, json_schema_extra=extra)


class SecretKeyRef(_Model):
    """A key of a Secret in the ScheduledBot's namespace."""

    model_config = ConfigDict(strict=True, extra="ignore")

    name: str = Field(min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN, description="The Secret's name.")
    key: str = Field(min_length=1, max_length=253, pattern=_SECRET_KEY, description="The key within the Secret.")


#: A URL needs its key, and a key without a URL would be ignored silently.
_PAIRED: Final = "url and signingKeySecretRef come together: a sink needs its signing key"
NOTIFY_RULES: Final[list[JsonValue]] = [{"rule": "has(self.url) == has(self.signingKeySecretRef)", "message": _PAIRED}]


class NotifySpec(_Model):
    """Where a bot's state changes are sent."""

    model_config = ConfigDict(strict=True, extra="ignore", json_schema_extra={"x-kubernetes-validations": NOTIFY_RULES})

    enabled: bool = Field(
        default=True,
        description=(
            "false: send no notifications for this bot, not even to the operator's default sink. Pending ones are "
            "kept (and given up after the retry window) in case notifications are turned on again."
        ),
    )
    url: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SINK_URL_LENGTH,
        description=(
            "The sink: each state change is POSTed here as a CloudEvents 1.0 JSON document, signed as Standard "
            "Webhooks specify (headers webhook-id, webhook-timestamp, webhook-signature). Must be https; hosts "
            "that resolve to loopback, link-local, private or other non-public addresses are refused unless the "
            "operator's administrator admitted them. Redirects are not followed. Absent: the operator's default "
            "sink, with this bot's events filter. Comes with signingKeySecretRef."
        ),
        json_schema_extra={"x-kubernetes-validations": _url_rules()},
    )
    signing_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description=(
            "The Secret (in the bot's namespace) and key holding the signing key, in the Standard Webhooks form "
            "whsec_<base64 of 24 to 64 random bytes>. The Secret must carry the label "
            f'{SIGNING_KEY_LABEL}: "true". The key is read for each delivery, so it can be rotated by editing the '
            "Secret; it never appears in status, Events or logs. Comes with url."
        ),
    )
    # Not strict: the states arrive as the strings a user wrote.
    events: list[Annotated[BotState, Field(strict=False)]] | None = Field(
        default=None,
        min_length=1,
        max_length=len(BotState),
        description=(
            "The states whose arrival is notified, e.g. [joined, recording, ended, failed]. Absent: every state "
            "change. A change into another state is not sent, but still counts in the sequence numbers."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @model_validator(mode="after")
    def _sink_with_key(self) -> NotifySpec:
        # The CRD's rule, repeated for specs that reach the operator without the apiserver's checks.
        if (self.url is None) != (self.signing_key_secret_ref is None):
            raise ValueError(_PAIRED)
        return self


class Notice(_Model):
    """One state change waiting to be delivered."""

    sequence: int = Field(
        ge=1,
        description=(
            "The change's number for this bot: 1, 2, 3... in the order the changes happened. With the bot's uid it "
            "makes the notification's id (<uid>.<sequence>), the same in every retry."
        ),
    )
    state: BotState = Field(description="The state the bot entered.")
    previous_state: BotState | None = Field(
        default=None,
        description="The state before (before the first of the coalesced changes, if any); absent for the first.",
    )
    at: str = _timestamp(
        "When the operator recorded the change (RFC 3339 UTC): the notification's time, and the start of its "
        "retry window.",
        required=True,
    )
    reason: str | None = Field(default=None, max_length=1024, description="status.reason with the change.")
    message: str | None = Field(
        default=None,
        max_length=MAX_NOTICE_MESSAGE,
        description=f"status.message with the change, cut at {MAX_NOTICE_MESSAGE} characters.",
    )
    join_at: str | None = _timestamp("status.joinAt at the change.")
    join_signaled_at: str | None = _timestamp("status.joinSignaledAt at the change.")
    join_lateness_ms: int | None = Field(default=None, description="status.joinLatenessMs at the change.")
    joined_by: JoinedBy | None = Field(default=None, description="status.joinedBy at the change.")
    attempts: int | None = Field(default=None, ge=1, description="Attempts made to deliver it so far.")
    coalesced: int | None = Field(
        default=None,
        ge=1,
        description=(
            f"How many earlier changes this entry also stands for: {MAX_PENDING} changes were already waiting, so "
            "the newest entry took in the next change instead of growing the queue. Absent: none."
        ),
    )


class DeliveredNotice(_Model):
    """The last change a sink accepted."""

    id: str = Field(max_length=MAX_ID_LENGTH, description="The notification's id (webhook-id, CloudEvents id).")
    sequence: int = Field(ge=1, description="The change's sequence number.")
    state: BotState = Field(description="The state it announced.")
    delivered_at: str = _timestamp("When the sink answered 2xx.", required=True)
    attempts: int = Field(ge=1, description="How many attempts it took.")


class FailedNotice(_Model):
    """The last change that was given up on."""

    id: str = Field(max_length=MAX_ID_LENGTH, description="The notification's id (webhook-id, CloudEvents id).")
    sequence: int = Field(ge=1, description="The change's sequence number.")
    state: BotState = Field(description="The state it announced.")
    failed_at: str = _timestamp("When it was given up.", required=True)
    attempts: int = Field(ge=0, description="How many attempts were made (0: it expired before its turn).")
    reason: str = Field(
        max_length=64,
        description=(
            "Rejected: the sink answered 4xx (not 429) or a redirect, or the egress policy refused it; Expired: no "
            "success within the retry window; Gone: the sink answered 410, and nothing more is sent to it."
        ),
    )
    message: str = Field(max_length=MAX_ERROR_LENGTH, description="What the last attempt met; never the URL's secrets.")


class NotificationsStatus(_Model):
    """Delivery of state-change notifications, written by the operator only."""

    sink: str | None = Field(
        default=None,
        max_length=64,
        description=(
            "A fingerprint of the sink this delivery state is about (a hash of its URL and key reference, never "
            "the URL). When the sink changes, the back-off starts afresh and a 410 Gone no longer applies."
        ),
    )
    sequence: int = Field(
        default=0,
        ge=0,
        description="The sequence number of the last state change recorded; the next change gets this + 1.",
    )
    pending: list[Notice] | None = Field(
        default=None,
        max_length=MAX_PENDING,
        description=(
            "The changes still to be delivered, oldest first; they are delivered one at a time in this order. "
            f"At most {MAX_PENDING}: beyond, the newest entry absorbs further changes (see coalesced)."
        ),
    )
    failures: int | None = Field(
        default=None,
        ge=1,
        description="Failed attempts in a row on this sink since its last success; they set the back-off.",
    )
    next_attempt_at: str | None = _timestamp(
        "When the first pending change is tried next, after a failure: the back-off (exponential, with jitter) "
        "or the sink's Retry-After, within bounds. Absent: as soon as possible."
    )
    failing_since: str | None = _timestamp("The first failed attempt since the last success.")
    last_error: str | None = Field(
        default=None,
        max_length=MAX_ERROR_LENGTH,
        description="What the last failed attempt met (HTTP status or connection error), without the URL's secrets.",
    )
    last_delivered: DeliveredNotice | None = Field(default=None, description="The last change a sink accepted.")
    last_failure: FailedNotice | None = Field(default=None, description="The last change that was given up on.")
    dropped: int | None = Field(
        default=None,
        ge=1,
        description="How many changes were given up on (Rejected, Expired, Gone) over the bot's life.",
    )
    gone: bool | None = Field(
        default=None,
        description="The sink answered 410 Gone: nothing more is sent to it until spec.notify changes.",
    )


class SigningKeyError(ValueError):
    """A signing key cannot be used; the message names where it came from, never its value."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A Standard Webhooks signing key, `whsec_<base64>`. Its repr hides the value."""

    secret: str = field(repr=False)


def parse_signing_key(text: str, *, source: str) -> SigningKey:
    """`text` (whsec_<base64>, surrounding whitespace ignored) as a key; `source` names it in errors."""
    value = text.strip()
    if not value.startswith(SIGNING_KEY_PREFIX):
        raise SigningKeyError(f"{source}: the signing key must start with {SIGNING_KEY_PREFIX}")
    try:
        raw = base64.b64decode(value.removeprefix(SIGNING_KEY_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise SigningKeyError(f"{source}: the signing key is not {SIGNING_KEY_PREFIX} followed by base64") from None
    if not MIN_KEY_BYTES <= len(raw) <= MAX_KEY_BYTES:
        raise SigningKeyError(
            f"{source}: the signing key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} random bytes, got {len(raw)}"
        )
    return SigningKey(value)


def signing_key_from_secret(secret: Mapping[str, Any], *, ref: SecretKeyRef) -> SigningKey:
    """The key `ref` names, from `secret` (a v1 Secret as the API returns it, `data` base64-encoded).

    Refuses a Secret that did not opt in with the `SIGNING_KEY_LABEL` label.
    """
    meta = secret.get("metadata") or {}
    namespace = meta.get("namespace", "")
    where = f"Secret {namespace}/{ref.name}" if namespace else f"Secret {ref.name}"
    labels = meta.get("labels") or {}
    if labels.get(SIGNING_KEY_LABEL) != "true":
        raise SigningKeyError(f'{where}: lacks the label {SIGNING_KEY_LABEL}: "true" that allows it to sign')
    data = secret.get("data") or {}
    encoded = data.get(ref.key)
    if not isinstance(encoded, str):
        raise SigningKeyError(f"{where}: has no key {ref.key!r}")
    try:
        text = base64.b64decode(encoded, validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        raise SigningKeyError(f"{where}, key {ref.key!r}: not an ASCII signing key") from None
    return parse_signing_key(text, source=f"{where}, key {ref.key!r}")
