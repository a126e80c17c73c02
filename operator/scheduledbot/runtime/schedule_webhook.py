"""The admission review of one BotSchedule: what CEL cannot check, with messages that name the field.

`core.schedule_admission.admit_schedule` decides everything that needs a
library or the clock (the zone exists, the cron expression and the RRULE parse
and still occur, the template is a valid ScheduledBot spec). The feed URL is a
credential kept in a Secret: when that Secret exists already, the review reads
it and refuses a BotSchedule whose Secret lacks the calendar-feed label or whose
URL is not https, so that the author hears of it at `kubectl apply` rather than
from the status. A Secret created after its BotSchedule (a GitOps sync applies
in any order) is checked by the controller, which reports the same words in
`SourceHealthy`.

The webhook's failure policy is Ignore: the controller re-checks every spec it
reads and marks one the webhook did not see `Stalled` with the reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scheduledbot.adapters.kube import ApiError
from scheduledbot.api.review import AdmissionRequest, Operation
from scheduledbot.core.schedule_admission import admit_schedule
from scheduledbot.runtime.schedule_feeds import FeedProblem, ReadSecret, feed_url_from_secret

_FIELD = "spec.ical.urlSecretRef"


async def review_schedule(
    request: AdmissionRequest,
    *,
    read_secret: ReadSecret,
    extra_meeting_hosts: frozenset[str],
    extra_feed_hosts: frozenset[str],
    now: datetime,
) -> list[str]:
    """The reasons to refuse this CREATE or UPDATE of a BotSchedule; empty to admit it."""
    if request.sub_resource or request.operation not in (Operation.CREATE, Operation.UPDATE):
        return []
    body = request.object or {}
    old: dict[str, Any] = request.old_object or {}
    if (old.get("metadata") or {}).get("deletionTimestamp"):
        return []  # its finalizers and labels may still change while it goes
    spec = body.get("spec")
    old_spec = old.get("spec")
    if request.operation is Operation.UPDATE and spec == old_spec:
        return []  # metadata or status only: the spec was admitted before
    refusals = admit_schedule(
        operation=request.operation.value,
        spec=spec if isinstance(spec, dict) else {},
        old_spec=old_spec if isinstance(old_spec, dict) else None,
        now=now,
        extra_hosts=extra_meeting_hosts,
    )
    if refusals or not isinstance(spec, dict) or not isinstance(spec.get("ical"), dict):
        return refusals
    ref = spec["ical"].get("urlSecretRef") or {}
    name, key = ref.get("name"), ref.get("key")
    if not isinstance(name, str) or not isinstance(key, str) or not request.namespace:
        return []
    try:
        secret = await read_secret(request.namespace, name)
        if secret is not None:
            feed_url_from_secret(secret, name=name, key=key, extra_hosts=extra_feed_hosts)
    except FeedProblem as problem:
        return [f"{_FIELD}: {problem}"]
    except ApiError:
        return []  # no answer about the Secret: the controller checks it when it reads the feed
    return []
