"""The admission webhook: its HTTPS server and the review of one ScheduledBot.

Why not kopf's webhook server
=============================
kopf's server reads bodies with aiohttp's default limit of 1 MiB and answers larger
ones 413; with `failurePolicy: Ignore` the API server then admits the object
unchecked, so size alone skipped every check. It also answers an unreadable review
with a 500 carrying Python's words, re-reads its certificate files on a 60 s
timer, and hands the handler no way to tell the API server from any other caller.
This server reads reviews up to `MAX_REVIEW_BYTES` (the API server's 3 MiB request
limit, with room for an UPDATE's old object and JSON escaping), and a larger one is
still denied, by the uid found in its first bytes, never let through; it answers a
body it cannot read with 400 and a sentence; it requires the API server's client
certificate when one is configured (runtime/webhook.py).

The review
==========
`Reviewer.review` is thin: `core.admission` decides everything it can alone, then
the reviewer asks the API server the questions only it can answer (may the author
do this? a LocalSubjectAccessReview each) and, for an authenticated caller only,
dry-runs the bot Pod as the operator in the review's own namespace. BotClasses are
known from a list made before the server starts and kept current by kopf's watch,
so that no review is answered before the classes (and their rules) are known.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from scheduledbot.adapters.kube import ApiError, Kube
from scheduledbot.api.resource import BOT_SCHEDULE, GROUP, KIND
from scheduledbot.api.review import AdmissionRequest, Operation, ReviewError, answer, parse_review, review_uid
from scheduledbot.core.admission import AccessCheck, assess, ratchets, verdict
from scheduledbot.runtime.classes import ClassCatalog
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.notify import egress_policy
from scheduledbot.runtime.notify_admission import sink_refusals
from scheduledbot.runtime.schedule_webhook import review_schedule
from scheduledbot.runtime.webhook import WEBHOOK_PATH

log = logging.getLogger(__name__)

#: The API server's request limit is 3 MiB; a review holds the object and, for an UPDATE,
#: the old one, each re-encoded (Go escapes <, >, & and U+2028 as six characters each).
MAX_REVIEW_BYTES: Final = 8 * 1024 * 1024
#: Reviews read at once: bounds the memory a burst of large reviews can take.
CONCURRENT_REVIEWS: Final = 8
#: Enough of an oversized body to find its uid (the API server writes it first).
_HEAD_BYTES: Final = 4096
#: The API server shows the message to the user; a list of refusals is cut here.
MAX_MESSAGE: Final = 16 * 1024
#: API answers to a dry run that say the Pod itself is refused (others are outages).
_REFUSALS: Final = frozenset({400, 403, 422})


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    message: str = ""


class Reviewer:
    """Reviews one ScheduledBot CREATE or UPDATE."""

    def __init__(self, *, settings: Settings, kube: Kube, classes: ClassCatalog) -> None:
        self._settings = settings
        self._kube = kube
        self._classes = classes

    async def review(self, request: AdmissionRequest, *, authenticated: bool) -> Decision:
        if (request.kind.group, request.kind.kind) == (GROUP, BOT_SCHEDULE.kind):
            refusals = await review_schedule(
                request,
                read_secret=self._kube.read_opted_in_secret,
                extra_meeting_hosts=self._settings.extra_meeting_hosts,
                extra_feed_hosts=self._settings.extra_feed_hosts,
                now=datetime.now(UTC),
            )
            return Decision(not refusals, _bounded("; ".join(refusals)))
        if (request.kind.group, request.kind.kind) != (GROUP, KIND):
            return Decision(False, f"this webhook reviews {KIND}s of {GROUP} only")
        if request.sub_resource or request.operation not in (Operation.CREATE, Operation.UPDATE):
            return Decision(True)
        body = request.object
        if body is None or not isinstance(body.get("metadata"), dict):
            return Decision(False, "request.object: a ScheduledBot with metadata is required")
        if not request.namespace or body["metadata"].get("namespace", request.namespace) != request.namespace:
            return Decision(False, "metadata.namespace: must be the namespace of the request")
        old = request.old_object or {}
        deleting = bool((old.get("metadata") or {}).get("deletionTimestamp"))
        if ratchets(operation=request.operation, spec=body.get("spec"), old_spec=old.get("spec"), deleting=deleting):
            return Decision(True)
        spec = body.get("spec")
        await self._learn_class(spec)
        settings = self._settings
        assessment = assess(
            operation=request.operation,
            name=request.name or str(body["metadata"].get("name") or ""),
            namespace=request.namespace,
            spec=spec if isinstance(spec, dict) else {},
            old_spec=old.get("spec") if isinstance(old.get("spec"), dict) else None,
            now=datetime.now(UTC),
            extra_hosts=settings.extra_meeting_hosts,
            classes=self._classes.snapshot(),
            default_template=settings.template,
            defaults=settings.defaults,
            self_join_delay_seconds=settings.self_join_delay_seconds,
        )
        allowed = dict(
            zip(
                assessment.checks,
                await asyncio.gather(*(self._may(request, check) for check in assessment.checks)),
                strict=True,
            )
        )
        refusal = None
        if not assessment.refusals and all(allowed.values()) and assessment.pod is not None and authenticated:
            refusal = await self._dry_run(request.namespace, assessment.pod)
        refusals = verdict(assessment, user=request.user_info.username, allowed=allowed, dry_run_refusal=refusal)
        refusals = [*refusals, *sink_refusals(spec, egress_policy(settings))]
        if refusals:
            return Decision(False, _bounded("; ".join(refusals)))
        return Decision(True)

    async def _learn_class(self, spec: Any) -> None:
        """Read a named class the watch has not brought yet (created a moment ago, with its bots)."""
        name = spec.get("botClassName") if isinstance(spec, dict) else None
        if isinstance(name, str) and name:
            await self._classes.learn(name, self._kube)

    async def _may(self, request: AdmissionRequest, check: AccessCheck) -> bool:
        user = request.user_info
        try:
            return await self._kube.may(
                user=user.username,
                uid=user.uid,
                groups=user.groups,
                extra=user.extra,
                namespace=request.namespace,
                verb=check.verb,
                resource=check.resource,
                name=check.name,
            )
        except ApiError as error:
            # No answer is no permission: the template waits for an authorizer that answers.
            log.warning("access review of %s %s failed: %s", check.verb, check.resource, error)
            return False

    async def _dry_run(self, namespace: str, pod: dict[str, Any]) -> str | None:
        try:
            await self._kube.create_pod(namespace, pod, dry_run=True)
        except ApiError as error:
            if error.status in _REFUSALS:
                return error.message
            log.warning("dry run of the bot Pod in %s failed: %s", namespace, error)
        return None


def _bounded(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


class AdmissionServer:
    """HTTPS server for AdmissionReviews on POST /validate."""

    def __init__(
        self,
        *,
        review: Callable[[AdmissionRequest, bool], Awaitable[Decision]],
        client_names: frozenset[str],
        on_result: Callable[[str], None] = lambda _: None,
    ) -> None:
        self._review = review
        self._client_names = client_names
        self._on_result = on_result
        self._slots = asyncio.Semaphore(CONCURRENT_REVIEWS)
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        # Bodies are read by `_handle` itself, within MAX_REVIEW_BYTES (aiohttp's own
        # limit, 1 MiB by default, applies only to its body helpers).
        app = web.Application(client_max_size=MAX_REVIEW_BYTES)
        app.router.add_post(f"/{WEBHOOK_PATH}", self._handle)
        return app

    async def start(self, *, host: str, port: int, ssl_context: Any) -> None:
        self._runner = web.AppRunner(self.application(), handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=ssl_context).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        async with self._slots:
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            authenticated = bool(peer)
            if self._client_names and not _named(peer, self._client_names):
                return self._refuse(403, "the client certificate does not name an accepted caller")
            head = await _read(request, _HEAD_BYTES)
            body = head + await _read(request, MAX_REVIEW_BYTES + 1 - len(head))
            if len(body) > MAX_REVIEW_BYTES:
                return await self._oversized(request, head)
            try:
                review = parse_review(body)
            except ReviewError as error:
                uid = review_uid(head)
                if uid is None:
                    return self._refuse(400, f"not an AdmissionReview: {error}")
                self._on_result("malformed")
                return web.json_response(answer(uid, allowed=False, message=f"malformed review: {error}", code=400))
            decision = await self._review(review.request, authenticated)
            self._on_result("allowed" if decision.allowed else "denied")
            return web.json_response(
                answer(review.request.uid, allowed=decision.allowed, message=decision.message, code=422)
            )

    async def _oversized(self, request: web.Request, head: bytes) -> web.Response:
        # Drain without keeping it, then deny by uid: a 413 would let `Ignore` admit the object.
        while await request.content.read(1 << 16):
            pass
        uid = review_uid(head)
        if uid is None:
            return self._refuse(413, f"an AdmissionReview is at most {MAX_REVIEW_BYTES} bytes")
        self._on_result("oversized")
        message = (
            f"the ScheduledBot is too large to review (its AdmissionReview exceeds {MAX_REVIEW_BYTES} bytes); "
            "spec.botConfig and spec.template have size limits"
        )
        return web.json_response(answer(uid, allowed=False, message=message, code=413))

    def _refuse(self, status: int, text: str) -> web.Response:
        self._on_result("refused")
        return web.Response(status=status, text=json.dumps({"message": text}), content_type="application/json")


async def _read(request: web.Request, size: int) -> bytes:
    """Up to `size` bytes of the body (a stream's read returns what has arrived, maybe less)."""
    parts: list[bytes] = []
    left = size
    while left > 0:
        chunk = await request.content.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _named(peer: Any, names: frozenset[str]) -> bool:
    """Whether the verified client certificate's common name is one of `names`."""
    if not isinstance(peer, dict):
        return False
    for rdn in peer.get("subject") or ():
        for key, value in rdn:
            if key == "commonName" and value in names:
                return True
    return False
