"""The kept objects as `core.plan` sees them: a pure mapping, no I/O, no clock.

The engine keeps the dicts of the watch (runtime/cache.py) and what this process
expects of them (a Pod it created, a Pod it is deleting); `pod_seen` applies those
expectations to a new dict, so that nothing kept is ever written into.
"""

from __future__ import annotations

from typing import Any

from scheduledbot.api.errors import SpecError
from scheduledbot.api.models import ScheduledBotStatus, parse_spec
from scheduledbot.core import children
from scheduledbot.core.botpod import Refusal, chosen_class, class_defaults
from scheduledbot.core.model import FINALIZER, BotView, Defaults, PodView
from scheduledbot.core.templates import ClassCatalog
from scheduledbot.protocol import ENV_MEETING_URL
from scheduledbot.runtime.cache import ParsedSpec, Seen
from scheduledbot.timestamps import parse_observed, parse_time


def bot_view(body: dict[str, Any], *, extra_hosts: frozenset[str], parsed: ParsedSpec | None = None) -> BotView:
    """The bot as `core.plan` sees it; its spec taken from `parsed` while uid and generation match.

    Parsing the spec is most of a pass's own work, and a join instant passes each bot
    two or three times (its status, its finalizer) with the spec unchanged.
    """
    meta = body["metadata"]
    uid, generation = meta["uid"], int(meta.get("generation") or 1)
    if parsed is not None and parsed.uid == uid and parsed.generation == generation:
        spec, error = parsed.spec, parsed.error
    else:
        spec, error = None, None
        try:
            spec = parse_spec(body.get("spec") or {}, extra_hosts=extra_hosts)
        except SpecError as bad:
            error = "; ".join(bad.messages)
    deleted = meta.get("deletionTimestamp")
    return BotView(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=uid,
        generation=generation,
        created_at=parse_time(meta["creationTimestamp"]),
        deleted_at=parse_time(deleted) if deleted else None,
        has_finalizer=FINALIZER in (meta.get("finalizers") or []),
        spec=spec,
        spec_error=error,
        status=ScheduledBotStatus.model_validate(body.get("status") or {}),
    )


def parsed_spec(view: BotView) -> ParsedSpec:
    """What `bot_view` may reuse of `view` at the next pass."""
    return ParsedSpec(uid=view.uid, generation=view.generation, spec=view.spec, error=view.spec_error)


def class_limited(defaults: Defaults, bot: BotView, classes: ClassCatalog) -> Defaults:
    """The operator's defaults, cut to the limits of the bot's class."""
    chosen = chosen_class(bot.spec, classes) if bot.spec is not None else None
    return class_defaults(defaults, chosen if not isinstance(chosen, Refusal) else None)


def pod_seen(seen: Seen) -> dict[str, Any] | None:
    """The bot's Pod as the next pass must take it: the watch's, with what this process knows better."""
    pod = seen.pod
    if pod is None and seen.created is not None:
        # Seen as Pending until the watch brings the real one.
        created = seen.created
        pod = {**created, "metadata": {**created["metadata"], "uid": ""}, "status": {"phase": "Pending"}}
    deleting = seen.deleting
    if pod is not None and deleting is not None and (pod["metadata"].get("uid") or "") == deleting.uid:
        # Until the watch shows it, this Pod is on its way out.
        pod = {**pod, "metadata": {"deletionTimestamp": deleting.since, **pod["metadata"]}}
    return pod


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def pod_view(pod: dict[str, Any] | None, owner_uid: str) -> PodView | None:
    """The Pod as `plan` sees it; a Pod that another object controls is not ours to use."""
    if pod is None:
        return None
    meta = pod["metadata"]
    refs = meta.get("ownerReferences") or []
    if not any(r.get("uid") == owner_uid and r.get("controller") for r in refs):
        return None
    status = pod.get("status") or {}
    waiting = terminated = None
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = waiting or state.get("waiting")
        terminated = terminated or state.get("terminated")
    deleted = meta.get("deletionTimestamp")
    finished = (terminated or {}).get("finishedAt")
    join_at = (meta.get("annotations") or {}).get(children.JOIN_AT_ANNOTATION)
    return PodView(
        name=meta["name"],
        uid=meta.get("uid") or "",
        phase=status.get("phase") or "Pending",
        ready=pod_ready(pod),
        ip=status.get("podIP"),
        deleting=bool(deleted),
        waiting_reason=(waiting or {}).get("reason"),
        waiting_message=(waiting or {}).get("message"),
        exit_code=(terminated or {}).get("exitCode"),
        control_port=children.control_port_of(pod),
        finished_at=parse_observed(finished),
        join_at=parse_observed(join_at),
        meeting_url=meeting_url(pod),
        gone_by=parse_observed(deleted),
    )


def meeting_url(pod: dict[str, Any]) -> str | None:
    """The meeting the Pod was made for: MEETING_URL of its bot (first) container."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    for env in containers[0].get("env") or []:
        if env.get("name") == ENV_MEETING_URL:
            value = env.get("value")
            return value if isinstance(value, str) else None
    return None
