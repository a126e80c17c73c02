"""The reconcile loop: observe -> `core.plan` -> act -> publish -> sleep until computed.

Why not kopf's change handlers
==============================
kopf's create/update/resume handlers persist their progress on the object (extra
writes per bot) and their timers are interval-based. Here kopf only delivers watch
events (`on.event`), which refresh an in-memory picture of each ScheduledBot and its
Pod; every pass then re-derives what to do from that picture and the clock.

Passes
======
Passes of one bot never overlap: a poke during a pass marks it dirty and one more
pass follows. Each pass reads `now` once. Its next wake-up is a single
`loop.call_at`, replaced by every pass; nothing wakes on a fixed interval.

The picture is refreshed by the writes themselves (the API returns the object as
written), and a watch event older than what a write returned is ignored, so a pass
never acts twice on a transition whose watch event has not arrived yet.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import logging
import secrets
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduledbot.adapters.bots import BotClient, BotUnreachable, JoinLine
from scheduledbot.adapters.kube import ApiError, Kube
from scheduledbot.api.errors import SpecError
from scheduledbot.api.joinat import format_time, parse_join_at
from scheduledbot.api.models import BotState, ScheduledBotStatus, ValidSpec, parse_spec
from scheduledbot.api.resource import API_VERSION, KIND
from scheduledbot.core import children, pacing
from scheduledbot.core.model import (
    FINALIZER,
    Action,
    AddFinalizer,
    ArmJoin,
    BotReport,
    BotView,
    CreatePod,
    CreateSecret,
    DeletePod,
    DisarmJoin,
    Emit,
    Leave,
    MoveSelfJoin,
    Observed,
    PodView,
    RemoveFinalizer,
    SignalOutcome,
)
from scheduledbot.core.plan import LATE_STAGING, plan
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.dispatch_thread import DispatcherThread
from scheduledbot.runtime.events import EventSink
from scheduledbot.runtime.metrics import Metrics
from scheduledbot.runtime.stager import Stager

log = logging.getLogger(__name__)

Key = tuple[str, str]

#: Back-off of the state long-poll after a failure: computed, growing, capped.
_FOLLOW_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)
#: A failed pass (the API server unreachable, say) is tried again after this, doubling, capped.
_RETRY_FIRST_SECONDS = 0.5
_RETRY_CAP_SECONDS = 60.0
#: API answers to a Pod creation that no retry can change.
_REFUSALS = frozenset({400, 403, 422})
#: The owner uid a dry-run Pod carries: a ScheduledBot under admission has none yet.
_DRY_RUN_UID = "00000000-0000-0000-0000-000000000000"
#: API writes in flight at once, so that 10,000 bots found at start-up queue politely.
_CONCURRENT_PASSES = 32


@dataclass(slots=True)
class _Entry:
    key: Key
    body: dict[str, Any] | None = None
    pod: dict[str, Any] | None = None
    token: str | None = None
    report: BotReport | None = None
    signal: SignalOutcome | None = None
    timer: asyncio.TimerHandle | None = None
    follow_address: str | None = None
    follower: asyncio.Task[None] | None = None
    running: bool = False
    dirty: bool = False
    said: set[tuple[str, str]] = field(default_factory=set)
    left: set[str] = field(default_factory=set)
    staged_seen: bool = False
    rejection: str | None = None
    #: Passes that failed in a row: the next one waits a growing, capped time.
    failures: int = 0


class Engine:
    def __init__(self, *, settings: Settings, kube: Kube, bots: BotClient, metrics: Metrics) -> None:
        self._settings = settings
        self._kube = kube
        self._bots = bots
        self._metrics = metrics
        self._entries: dict[Key, _Entry] = {}
        self._slots = asyncio.Semaphore(_CONCURRENT_PASSES)
        self._tasks: set[asyncio.Task[None]] = set()
        self._events = EventSink(kube)
        self._stager: Stager[Key] = Stager(poke=self.poke)
        metrics.staging_pace.set_function(lambda: self._stager.rate)
        self.dispatcher: DispatcherThread[Key] = DispatcherThread(report=self._signal_outcome, lag=metrics.observe_lag)
        metrics.bind_states(self._states)

    # Watch events (from kopf) -----------------------------------------------------------

    def bot_event(self, kind: str | None, body: dict[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if kind == "DELETED":
            self._forget(key)
            return
        entry = self._entries.setdefault(key, _Entry(key=key))
        if entry.body is not None and entry.body["metadata"].get("uid") != body["metadata"].get("uid"):
            # Deleted and created again under the same name: a new bot.
            self._forget(key)
            entry = self._entries.setdefault(key, _Entry(key=key))
        if _newer(body, entry.body):
            entry.body = _kept(body)
            self.poke(key)

    def pod_event(self, kind: str | None, body: dict[str, Any]) -> None:
        owner = _controller(body)
        if owner is None:
            return
        key = (body["metadata"]["namespace"], owner)
        entry = self._entries.setdefault(key, _Entry(key=key))
        if kind == "DELETED":
            if entry.body is None:
                # A Pod whose ScheduledBot is already gone (or never seen): nothing to keep.
                self._forget(key)
                return
            if entry.pod is not None and entry.pod["metadata"].get("uid") == body["metadata"].get("uid"):
                entry.pod = None
                entry.report = None
            self.poke(key)
            return
        if _newer(body, entry.pod):
            self._note_staging_time(entry, body)
            entry.pod = _kept(body)
            self.poke(key)

    # Passes -------------------------------------------------------------------------------

    def poke(self, key: Key) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        if entry.running:
            entry.dirty = True
            return
        entry.running = True
        self._spawn(self._passes(entry))

    async def _passes(self, entry: _Entry) -> None:
        try:
            while True:
                entry.dirty = False
                async with self._slots:
                    try:
                        await self._pass(entry)
                        entry.failures = 0
                    except Exception:  # one bot's trouble must not stop the others
                        self._retry_later(entry)
                if not entry.dirty:
                    return
        finally:
            entry.running = False

    async def _pass(self, entry: _Entry) -> None:
        if entry.body is None or self._entries.get(entry.key) is not entry:
            return
        now = datetime.now(UTC)
        bot = self._bot_view(entry.body)
        stage_by, ready_expected_at = self._staging(entry, bot, now)
        observed = Observed(
            pod=_pod_view(entry.pod, bot.uid),
            secret=entry.token is not None,
            report=entry.report,
            signal=entry.signal,
            rejection=entry.rejection,
            stage_by=stage_by,
            ready_expected_at=ready_expected_at,
        )
        decision = plan(bot=bot, observed=observed, defaults=self._settings.defaults, now=now)
        # The status is what `kubectl get sbot` shows: at a join instant a thousand passes
        # write it before their finalizers and Events (the signal is out either way).
        later = [a for a in decision.actions if isinstance(a, Emit | AddFinalizer)]
        for action in decision.actions:
            if action in later:
                continue
            if not await self._act(entry, bot, action, now):
                # Refused: this plan is void; the next pass decides with the refusal observed.
                entry.dirty = True
                return
        await self._publish(entry, decision.status)
        for action in later:
            if isinstance(action, Emit):
                self._say(entry, action, now)
            else:
                await self._act(entry, bot, action, now)
        self._follow(entry, decision.follow)
        self._wake(entry, decision.wake_at, now)

    def _staging(self, entry: _Entry, bot: BotView, now: datetime) -> tuple[datetime | None, datetime | None]:
        """The bot's paced creation slot (runtime/stager.py) and when its Pod is expected Ready."""
        spec, state = bot.spec, bot.status.state
        ready = self._stager.ready_seconds
        waiting = state in (None, BotState.SCHEDULED) and entry.pod is None and bot.deleted_at is None
        if spec is None or not waiting:
            self._stager.done(entry.key)
            pod = entry.pod
            if spec is None or state is not BotState.STAGED or pod is None or _pod_ready(pod):
                return None, None
            created = pod["metadata"].get("creationTimestamp")
            at = parse_join_at(created) if created else None
            return None, pacing.expected_ready(now=now, created_at=at, ready_seconds=ready)
        lead = spec.staging_lead_seconds
        stage_at = spec.join_at - timedelta(
            seconds=self._settings.defaults.staging_lead_seconds if lead is None else lead
        )
        slot = self._stager.want(entry.key, stage_at=stage_at, join_at=spec.join_at)
        return slot, pacing.expected_ready(now=now, created_at=slot or stage_at, ready_seconds=ready)

    def _retry_later(self, entry: _Entry) -> None:
        delay = min(_RETRY_CAP_SECONDS, _RETRY_FIRST_SECONDS * 2**entry.failures)
        entry.failures += 1
        log.exception("pass for %s/%s failed; trying again in %.1f s", *entry.key, delay)
        if entry.timer is not None:
            entry.timer.cancel()
        entry.timer = asyncio.get_running_loop().call_later(delay, self.poke, entry.key)

    def _wake(self, entry: _Entry, at: datetime | None, now: datetime) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if at is None:
            return
        if at <= now:
            entry.dirty = True
            return
        loop = asyncio.get_running_loop()
        entry.timer = loop.call_at(loop.time() + (at - now).total_seconds(), self.poke, entry.key)

    async def _publish(self, entry: _Entry, status: ScheduledBotStatus) -> None:
        assert entry.body is not None
        new = status.model_dump(by_alias=True, exclude_none=True, mode="json")
        old = entry.body.get("status") or {}
        if new == old:
            return
        patch: dict[str, Any] = {k: None for k in old if k not in new} | new
        namespace, name = entry.key
        written = await self._kube.patch_status(namespace, name, patch)
        if written is not None and _newer(written, entry.body):
            entry.body = _kept(written)
        self._metrics.status_writes.inc()

    # Actions ------------------------------------------------------------------------------

    async def _act(self, entry: _Entry, bot: BotView, action: Action, now: datetime) -> bool:
        """Carry out one action; False when the API server refused it for good."""
        namespace, name = entry.key
        match action:
            case CreateSecret():
                fresh = secrets.token_urlsafe(32)
                body = children.build_secret(name=name, namespace=namespace, uid=bot.uid, token=fresh)
                if await self._kube.create_secret(namespace, body):
                    entry.token = fresh
                else:
                    await self._load_token(entry)
            case CreatePod(join_at=join_at):
                return await self._create_pod(entry, bot, join_at)
            case DeletePod(uid=uid):
                await self._kube.delete_pod(namespace, children.pod_name(name), uid)
                if entry.pod is not None:
                    # Until the watch shows it, remember that this Pod is on its way out.
                    entry.pod["metadata"].setdefault("deletionTimestamp", format_time(now))
            case ArmJoin(join_at=join_at, address=address, request_id=request_id, not_before=not_before):
                token = await self._load_token(entry)
                if token is None or bot.spec is None:
                    return True
                line = JoinLine(
                    address=address,
                    token=token,
                    request_id=request_id,
                    meeting_url=bot.spec.meeting_url,
                    bot_name=bot.spec.bot_name,
                    join_at=format_time(join_at),
                )
                self.dispatcher.arm(entry.key, join_at=join_at, not_before=not_before, line=line, request_id=request_id)
            case DisarmJoin():
                self.dispatcher.disarm(entry.key)
            case MoveSelfJoin(join_at=join_at, address=address):
                token = await self._load_token(entry)
                if token is not None:
                    self._spawn(self._bot_call(self._bots.move_self_join(address, token, join_at=join_at)))
            case Leave(address=address, reason=reason):
                token = await self._load_token(entry)
                if token is not None and address not in entry.left:
                    entry.left.add(address)
                    self._spawn(self._bot_call(self._bots.leave(address, token, reason=reason)))
            case AddFinalizer() | RemoveFinalizer():
                assert entry.body is not None
                written = await self._kube.set_finalizer(
                    entry.body, FINALIZER, present=isinstance(action, AddFinalizer)
                )
                if written is not None and _newer(written, entry.body):
                    entry.body = _kept(written)
        return True

    def _say(self, entry: _Entry, emit: Emit, now: datetime) -> None:
        """An Event leaves after the pass's status, in the background (runtime/events.py)."""
        if (emit.reason, emit.message) in entry.said or entry.body is None:
            return
        entry.said.add((emit.reason, emit.message))
        if emit.reason == LATE_STAGING:
            self._metrics.late_staging.inc()
        log.info("%s/%s %s: %s", *entry.key, emit.reason, emit.message)
        self._events.emit(entry.body, type_=emit.type.value, reason=emit.reason, message=emit.message, now=now)

    def _pod_body(self, *, name: str, namespace: str, uid: str, spec: ValidSpec, join_at: datetime) -> dict[str, Any]:
        defaults = self._settings.defaults
        return children.build_pod(
            name=name,
            namespace=namespace,
            uid=uid,
            spec=spec,
            template=spec.template or self._settings.template,
            join_at=join_at,
            join_deadline_seconds=spec.join_deadline_seconds or defaults.join_deadline_seconds,
            max_duration_seconds=spec.max_duration_seconds or defaults.max_duration_seconds,
            self_join_delay_seconds=self._settings.self_join_delay_seconds,
        )

    async def pod_refusal(self, *, namespace: str, name: str, spec: ValidSpec) -> str | None:
        """Why the API server would refuse this bot's Pod (a server-side dry run), if it would.

        The admission webhook asks, so that a bad template (or one the namespace's Pod
        Security level forbids) is refused when the ScheduledBot is applied, not at stageAt.
        """
        try:
            body = self._pod_body(name=name, namespace=namespace, uid=_DRY_RUN_UID, spec=spec, join_at=spec.join_at)
            await self._kube.create_pod(namespace, body, dry_run=True)
        except ValueError as error:
            return str(error)
        except ApiError as error:
            if error.status in _REFUSALS:
                return error.message
            log.warning("dry run of the bot Pod for %s/%s failed: %s", namespace, name, error)
        return None

    async def _create_pod(self, entry: _Entry, bot: BotView, join_at: datetime) -> bool:
        namespace, name = entry.key
        assert bot.spec is not None
        try:
            body = self._pod_body(name=name, namespace=namespace, uid=bot.uid, spec=bot.spec, join_at=join_at)
            created = await self._kube.create_pod(namespace, body)
        except (ApiError, ValueError) as error:
            if isinstance(error, ApiError) and error.status not in _REFUSALS:
                raise
            # Retrying cannot help: the next pass fails the bot with the server's reason.
            entry.rejection = error.message if isinstance(error, ApiError) else str(error)
            return False
        if created:
            self._stager.created(entry.key)
            # Seen as Pending until the watch brings the real one.
            body["metadata"]["uid"] = ""
            body["status"] = {"phase": "Pending"}
            if entry.pod is None:
                entry.pod = body
        return True

    async def _load_token(self, entry: _Entry) -> str | None:
        if entry.token is None:
            namespace, name = entry.key
            secret = await self._kube.read_secret(namespace, children.secret_name(name))
            if secret is not None:
                entry.token = base64.b64decode(secret["data"][children.TOKEN_KEY]).decode()
        return entry.token

    async def _bot_call(self, call: Awaitable[BotReport]) -> None:
        try:
            await call
        except BotUnreachable as error:
            log.warning("bot call failed: %s", error)

    # The bot's own reports ---------------------------------------------------------------

    def _signal_outcome(self, key: Key, outcome: SignalOutcome) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        if outcome.report is not None:
            self._take_report(entry, outcome.report)
        else:
            entry.signal = outcome
            if outcome.error is not None:
                self._metrics.signal_failures.inc()
            elif outcome.sent_at is not None:
                self._metrics.join_lateness.observe((outcome.sent_at - outcome.join_at).total_seconds())
        self.poke(entry.key)

    def _take_report(self, entry: _Entry, report: BotReport) -> None:
        if entry.report is None or report.version > entry.report.version:
            entry.report = report

    def _follow(self, entry: _Entry, address: str | None) -> None:
        if address == entry.follow_address:
            return
        if entry.follower is not None:
            entry.follower.cancel()
            entry.follower = None
        entry.follow_address = address
        if address is not None:
            entry.follower = self._spawn(self._follow_loop(entry, address))

    async def _follow_loop(self, entry: _Entry, address: str) -> None:
        """Long-poll the bot's state: one request open per bot, answered on change."""
        failures = 0
        while True:
            token = await self._load_token(entry)
            if token is None:
                return
            after = entry.report.version if entry.report is not None else 0
            try:
                report = await self._bots.state(address, token, after=after)
            except BotUnreachable as error:
                delay = _FOLLOW_BACKOFF[min(failures, len(_FOLLOW_BACKOFF) - 1)]
                failures += 1
                log.debug("state of %s unavailable (%s); again in %.1f s", address, error, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            if report.version != after:
                self._take_report(entry, report)
                self.poke(entry.key)

    # Bookkeeping --------------------------------------------------------------------------

    def _bot_view(self, body: dict[str, Any]) -> BotView:
        meta = body["metadata"]
        spec: Any = None
        error: str | None = None
        try:
            spec = parse_spec(body.get("spec") or {}, extra_hosts=self._settings.extra_meeting_hosts)
        except SpecError as bad:
            error = "; ".join(bad.messages)
        deleted = meta.get("deletionTimestamp")
        return BotView(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=int(meta.get("generation") or 1),
            created_at=parse_join_at(meta["creationTimestamp"]),
            deleted_at=parse_join_at(deleted) if deleted else None,
            has_finalizer=FINALIZER in (meta.get("finalizers") or []),
            spec=spec,
            spec_error=error,
            status=ScheduledBotStatus.model_validate(body.get("status") or {}),
        )

    def _note_staging_time(self, entry: _Entry, pod: dict[str, Any]) -> None:
        if entry.staged_seen or not _pod_ready(pod):
            return
        entry.staged_seen = True
        created = pod["metadata"].get("creationTimestamp")
        ready_at = next(
            (
                c.get("lastTransitionTime")
                for c in (pod.get("status") or {}).get("conditions") or []
                if c.get("type") == "Ready"
            ),
            None,
        )
        seconds = None
        if created and ready_at:
            seconds = (parse_join_at(ready_at) - parse_join_at(created)).total_seconds()
            self._metrics.staging_time.observe(seconds)
        self._stager.ready(entry.key, seconds=seconds, at=time.time())

    def _states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self._entries.values():
            state = ((entry.body or {}).get("status") or {}).get("state")
            if state:
                counts[state] = counts.get(state, 0) + 1
        return counts

    def _forget(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        if entry.timer is not None:
            entry.timer.cancel()
        if entry.follower is not None:
            entry.follower.cancel()
        self.dispatcher.disarm(key)
        self._stager.forget(key)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        # An empty context, not a copy of the caller's: a pass spawned from a kopf handler
        # would otherwise carry kopf's context variables (the event's cause, body, patch and
        # logger), and so would every timer the pass arms, for as long as a bot waits
        # (bench, 10,000 scheduled bots: 45 MB of the operator's memory).
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for key in list(self._entries):
            self._forget(key)
        await self.dispatcher.close()
        await self._events.close()
        self._stager.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _kept(body: dict[str, Any]) -> dict[str, Any]:
    """The object as the engine keeps it: without metadata.managedFields, which nothing here
    reads and which is about half of a ScheduledBot (10,000 waiting bots: 70 MB less)."""
    meta = body.get("metadata") or {}
    if "managedFields" not in meta:
        return body
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _newer(body: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """Is `body` at least as new as `than`? resourceVersions are etcd revisions here."""
    if than is None:
        return True
    new, old = body["metadata"].get("resourceVersion"), than["metadata"].get("resourceVersion")
    try:
        return int(new) >= int(old)
    except (TypeError, ValueError):
        return True


def _controller(pod: dict[str, Any]) -> str | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == KIND and ref.get("apiVersion") == API_VERSION:
            return str(ref["name"])
    return None


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _pod_view(pod: dict[str, Any] | None, owner_uid: str) -> PodView | None:
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
    return PodView(
        name=meta["name"],
        uid=meta.get("uid") or "",
        phase=status.get("phase") or "Pending",
        ready=_pod_ready(pod),
        ip=status.get("podIP"),
        deleting=bool(meta.get("deletionTimestamp")),
        waiting_reason=(waiting or {}).get("reason"),
        waiting_message=(waiting or {}).get("message"),
        exit_code=(terminated or {}).get("exitCode"),
        control_port=children.control_port_of(pod),
    )
