"""One notification on the wire: a CloudEvent, signed as Standard Webhooks say, POSTed through the egress client.

The envelope and the signature come from their maintained libraries
====================================================================
The body is a CloudEvents 1.0 event in the structured JSON format, built and
serialised by the `cloudevents` SDK (`Content-Type: application/cloudevents+json`),
so receivers can parse it with any CloudEvents SDK. The signature is
`standardwebhooks.Webhook.sign`: HMAC-SHA256 over `id.timestamp.body` with the
key's bytes, sent as `webhook-signature: v1,<base64>` with `webhook-id` (the
CloudEvent's id, the same in every retry) and `webhook-timestamp` (the attempt's
time, so that a receiver's 5-minute tolerance accepts a retry of an old change).
Receivers verify with `standardwebhooks` or Svix's libraries.

The answer, classified for the core
===================================
`deliver` never raises for the sink's sake: it returns a `core.notify.Attempt`
(an HTTP status and its Retry-After, or why there was no answer) for
`core.notify.plan_delivery` to fold. A sink's answer is untrusted text: at most
a short printable excerpt of it reaches the status.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from cloudevents.core.bindings.http import to_structured_event
from cloudevents.core.v1.event import CloudEvent
from standardwebhooks import Webhook

from scheduledbot.adapters.egress import EgressClient, EgressError, EgressRefused
from scheduledbot.api import resource
from scheduledbot.api.notify import SigningKey
from scheduledbot.core.notify import Attempt, Deliver, Failure
from scheduledbot.timestamps import parse_time

EVENT_TYPE: Final = "dev.meetingbots.scheduledbot.state_changed"
CONTENT_TYPE: Final = "application/cloudevents+json"
DATA_CONTENT_TYPE: Final = "application/json"
#: What is read of a sink's answer: enough for an error excerpt, never more.
MAX_ANSWER_BYTES: Final = 4096
_EXCERPT_LENGTH: Final = 200
#: Runs of anything but visible ASCII (controls, escapes, line breaks, spaces) become one space.
_UNPRINTABLE: Final = re.compile(r"[^\x21-\x7e]+")


def event_source(*, namespace: str, name: str) -> str:
    """The CloudEvent source: the ScheduledBot's API path, a URI reference."""
    return f"/apis/{resource.API_VERSION}/namespaces/{namespace}/{resource.PLURAL}/{name}"


def build_event(*, delivery: Deliver, name: str, namespace: str, uid: str, meeting_url: str | None) -> CloudEvent:
    """The CloudEvent of one state change: the change as recorded, the bot as it is."""
    notice = delivery.notice
    data: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "sequence": notice.sequence,
        "previousState": notice.previous_state.value if notice.previous_state else None,
        "state": notice.state.value,
        "reason": notice.reason,
        "message": notice.message,
        "joinAt": notice.join_at,
        "joinSignaledAt": notice.join_signaled_at,
        "joinLatenessMs": notice.join_lateness_ms,
        "joinedBy": notice.joined_by.value if notice.joined_by else None,
        "meetingUrl": meeting_url,
        "coalesced": notice.coalesced or 0,
    }
    attributes: dict[str, Any] = {
        "id": delivery.id,
        "source": event_source(namespace=namespace, name=name),
        "type": EVENT_TYPE,
        "subject": notice.state.value,
        "time": parse_time(notice.at),
        "datacontenttype": DATA_CONTENT_TYPE,
    }
    return CloudEvent(attributes, data)


def envelope(event: CloudEvent) -> bytes:
    """The structured-mode JSON body."""
    return to_structured_event(event).body


def signature_headers(*, key: SigningKey, message_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`, sent as `message_id` at `timestamp` (aware)."""
    moment = timestamp.astimezone(UTC)
    signature = Webhook(key.secret).sign(msg_id=message_id, timestamp=moment, data=body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(moment.timestamp())),
        "webhook-signature": signature,
    }


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """A Retry-After header (delay-seconds or an HTTP date) as seconds from `now`; None if absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def excerpt(body: bytes) -> str:
    """A sink's answer as a short printable line (it is untrusted and may end up in status)."""
    text = _UNPRINTABLE.sub(" ", body[: _EXCERPT_LENGTH * 4].decode("utf-8", errors="replace")).strip()
    return text if len(text) <= _EXCERPT_LENGTH else text[: _EXCERPT_LENGTH - 1] + "…"


class Notifier:
    """Sends notifications through an egress client (whose policy guards the sink URLs)."""

    def __init__(self, client: EgressClient, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._client = client
        self._clock = clock

    async def deliver(
        self,
        delivery: Deliver,
        *,
        url: str,
        key: SigningKey,
        name: str,
        namespace: str,
        uid: str,
        meeting_url: str | None,
    ) -> Attempt:
        """POST `delivery` to `url`, signed with `key`; what happened, for the retry policy."""
        body = envelope(
            build_event(delivery=delivery, name=name, namespace=namespace, uid=uid, meeting_url=meeting_url)
        )
        headers = {
            "Content-Type": CONTENT_TYPE,
            **signature_headers(key=key, message_id=delivery.id, timestamp=self._clock(), body=body),
        }
        try:
            answer = await self._client.request(
                "POST", url, headers=headers, body=body, max_body_bytes=MAX_ANSWER_BYTES
            )
        except EgressRefused as refused:
            return Attempt(id=delivery.id, failure=Failure.REFUSED, detail=str(refused))
        except EgressError as error:
            return Attempt(id=delivery.id, failure=Failure.CONNECTION, detail=str(error))
        ok = 200 <= answer.status < 300
        return Attempt(
            id=delivery.id,
            status=answer.status,
            retry_after_seconds=None
            if ok
            else retry_after_seconds(answer.headers.get("retry-after"), now=self._clock()),
            detail="" if ok else excerpt(answer.body),
        )
