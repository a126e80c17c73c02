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
pass follows (runtime/workqueue.py). Each pass reads `now` once. Its next wake-up
is a single timer, replaced by every pass; nothing wakes on a fixed interval.

The picture is refreshed by the writes themselves (the API returns the object as
written), and a watch event older than what a write returned is ignored, so a pass
never acts twice on a transition whose watch event has not arrived yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from scheduledbot.adapters.bots import BotClient, BotUnreachable, JoinLine
from scheduledbot.adapters.kube import ApiError, Kube
from scheduledbot.api.errors import SpecError
from scheduledbot.api.models import BotState, ScheduledBotStatus, parse_spec
from scheduledbot.api.resource import API_VERSION, KIND
from scheduledbot.core import children, pacing, tokens
from scheduledbot.core.botpod import Refusal, bot_pod, chosen_class, class_defaults
from scheduledbot.core.merge_patch import merge_patch
from scheduledbot.core.model import (
    FINALIZER,
    Action,
    AddFinalizer,
    ArmJoin,
    BotReport,
    BotView,
    CreatePod,
    CreateSecret,
    Defaults,
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
from scheduledbot.protocol import ENV_MEETING_URL
from scheduledbot.runtime.classes import ClassCatalog
from scheduledbot.runtime.clock import Clock, SystemClock
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.dispatch_thread import DispatcherThread
from scheduledbot.runtime.dispatcher import JoinDispatcher
from scheduledbot.runtime.events import EventSink
from scheduledbot.runtime.metrics import Metrics
from scheduledbot.runtime.notify import Notifications
from scheduledbot.runtime.stager import Stager
from scheduledbot.runtime.workqueue import Passes
from scheduledbot.timestamps import format_time, parse_time

log = logging.getLogger(__name__)

Key = tuple[str, str]

#: Back-off of the state long-poll after a failure: computed, growing, capped.
_FOLLOW_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)
#: Reads of the bot's state that fail in a row before the failure is shown to `plan`
#: (which may then judge a bot past its deadline Missed): three tries over about 0.7 s.
_STATE_FAILURES_TO_REPORT = 3
#: API answers to a Pod creation that no retry can change.
_REFUSALS = frozenset({400, 403, 422})
#: API writes in flight at once, so that 10,000 bots found at start-up queue politely.
_CONCURRENT_PASSES = 32
#: What only the leader does (runtime/leader.py): every write to the API server. Joins,
#: the state long-poll and the bot's leave and move calls are idempotent at the bot: a
#: standby makes them too, so that it is ready the instant it leads.
_WRITES = (Emit, CreateSecret, CreatePod, DeletePod, AddFinalizer, RemoveFinalizer)


@dataclass(slots=True)
class _Entry:
    key: Key
    body: dict[str, Any] | None = None
    pod: dict[str, Any] | None = None
    #: The token Secret exists (created by this process, or found under its keyed name).
    secret: bool = False
    report: BotReport | None = None
    signal: SignalOutcome | None = None
    follow_address: str | None = None
    follower: asyncio.Task[None] | None = None
    said: set[tuple[str, str]] = field(default_factory=set)
    #: Addresses asked to leave (the request in flight or answered).
    left: set[str] = field(default_factory=set)
    #: Leave requests that failed in a row: the next one waits a growing, capped time.
    leave_failures: int = 0
    staged_seen: bool = False
    rejection: str | None = None
    #: Why the last read of the bot's state failed (None once one succeeds).
    state_error: str | None = None
    rejection_reason: str | None = None


#: Reports an event loop's lag at a join instant: `(loop, seconds)`, from either thread.
LagReport = Callable[[str, float], None]
#: Makes the join dispatcher from the engine's outcome callback, clock and lag report.
DispatcherFactory = Callable[
    [Callable[[Key, SignalOutcome], None], Clock, LagReport], "JoinDispatcher[Key] | DispatcherThread[Key]"
]


def in_loop_dispatcher(
    report: Callable[[Key, SignalOutcome], None], clock: Clock, lag: LagReport
) -> JoinDispatcher[Key]:
    """The join dispatcher on the engine's own event loop (the one unit scenarios drive)."""
    return JoinDispatcher(report=report, clock=clock, instant=lambda fire, late: lag("dispatcher", late))


def threaded_dispatcher(
    report: Callable[[Key, SignalOutcome], None], clock: Clock, lag: LagReport
) -> DispatcherThread[Key]:
    """The join dispatcher on its own loop in its own thread (runtime/dispatch_thread.py), so that
    nothing on the operator's loop delays the instant; it keeps the wall clock."""
    return DispatcherThread(report=report, lag=lag)


class Engine:
    def __init__(
        self,
        *,
        settings: Settings,
        kube: Kube,
        bots: BotClient,
        metrics: Metrics,
        classes: ClassCatalog | None = None,
        leading: Callable[[], bool] = lambda: True,
        notifications: Notifications | None = None,
        clock: Clock | None = None,
        join_line: Callable[..., JoinLine] = JoinLine,
        dispatcher: DispatcherFactory = threaded_dispatcher,
    ) -> None:
        self._settings = settings
        self._classes = classes if classes is not None else ClassCatalog()
        #: Whether this replica may write now; always, without leader election.
        self._leading = leading
        self._kube = kube
        self._bots = bots
        self._metrics = metrics
        self._clock: Clock = clock or SystemClock()
        self._join_line = join_line
        self._entries: dict[Key, _Entry] = {}
        self._passes: Passes[Key] = Passes(
            run=self._pass,
            concurrency=_CONCURRENT_PASSES,
            label="/".join,
            log=log,
            clock=self._clock,
            spun=metrics.pass_spins.inc,
        )
        self._events = EventSink(kube)
        self._stager: Stager[Key] = Stager(poke=self.poke, clock=self._clock)
        metrics.staging_pace.set_function(lambda: self._stager.rate)
        self.dispatcher: JoinDispatcher[Key] | DispatcherThread[Key] = dispatcher(
            self._signal_outcome, self._clock, metrics.observe_lag
        )
        metrics.bind_states(self._states)
        # State changes are recorded in the status they make; their delivery runs beside the passes.
        self._notify = notifications
        if notifications is not None:
            notifications.bind(self.poke)

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

    def wake_all(self) -> None:
        """A pass of every bot now: this replica has just become the one that writes."""
        for key in list(self._entries):
            self.poke(key)

    def poke(self, key: Key) -> None:
        if key in self._entries:
            self._passes.poke(key)

    async def _pass(self, key: Key) -> None:
        entry = self._entries.get(key)
        if entry is None or entry.body is None:
            return
        self._metrics.passes.inc()
        now = self._clock.now()
        bot = self._bot_view(entry.body)
        staging = self._staging(entry, bot, now)
        observed = self._observed(entry, bot, staging)
        decision = plan(bot=bot, observed=observed, defaults=self._defaults(bot), now=now)
        # The status is what `kubectl get sbot` shows: at a join instant a thousand passes
        # write it before their finalizers and Events (the signal is out either way).
        later = [a for a in decision.actions if isinstance(a, Emit | AddFinalizer)]
        for action in decision.actions:
            if action in later or (isinstance(action, _WRITES) and not self._leading()):
                continue
            if not await self._act(entry, bot, action, now):
                # Refused: this plan is void; the next pass decides with the refusal observed.
                self._passes.again(entry.key)
                return
        if self._leading():
            status = decision.status
            if self._notify is not None:
                status = self._notify.fold(entry.key, bot, status, now)
            await self._publish(entry, status)
            if self._notify is not None:
                self._notify.published(entry.key, entry.body)
            for action in later:
                if not self._leading():
                    break  # the lease lapsed meanwhile: the new leader says the rest
                if isinstance(action, Emit):
                    self._say(entry, action, now)
                else:
                    await self._act(entry, bot, action, now)
        elif decision.wake_at is not None and decision.wake_at <= now:
            # "Now" asks for the step after a write a standby did not make: the leader's
            # write (its watch event) or this replica's taking the lead brings the next pass.
            decision = replace(decision, wake_at=None)
        self._follow(entry, decision.follow)
        if decision.wake_at is not None and decision.wake_at <= now and not self._changed(entry, bot, observed):
            self._passes.defer_spin(entry.key, now)
            return
        self._passes.wake(entry.key, decision.wake_at, now)

    def _observed(self, entry: _Entry, bot: BotView, staging: tuple[datetime | None, datetime | None]) -> Observed:
        stage_by, ready_expected_at = staging
        return Observed(
            pod=_pod_view(entry.pod, bot.uid),
            secret=entry.secret,
            report=entry.report,
            signal=entry.signal,
            rejection=entry.rejection,
            rejection_reason=entry.rejection_reason,
            state_error=entry.state_error,
            stage_by=stage_by,
            ready_expected_at=ready_expected_at,
        )

    def _changed(self, entry: _Entry, bot: BotView, observed: Observed) -> bool:
        """Would the next pass see anything this one did not? (Only asked when a pass wants "now".)"""
        if entry.body is None:
            return True
        after = self._bot_view(entry.body)
        staging = (observed.stage_by, observed.ready_expected_at)
        return after != bot or self._observed(entry, after, staging) != observed

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
            at = parse_time(created) if created else None
            return None, pacing.expected_ready(now=now, created_at=at, ready_seconds=ready)
        lead = spec.staging_lead_seconds
        stage_at = spec.join_at - timedelta(
            seconds=self._settings.defaults.staging_lead_seconds if lead is None else lead
        )
        slot = self._stager.want(entry.key, stage_at=stage_at, join_at=spec.join_at)
        return slot, pacing.expected_ready(now=now, created_at=slot or stage_at, ready_seconds=ready)

    async def _publish(self, entry: _Entry, status: ScheduledBotStatus) -> None:
        assert entry.body is not None
        new = status.model_dump(by_alias=True, exclude_none=True, mode="json")
        old = entry.body.get("status") or {}
        if new == old:
            return
        patch = merge_patch(old, new)
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
                body = children.build_secret(
                    name=name, namespace=namespace, uid=bot.uid, token=self._token(bot), secret=self._secret_name(bot)
                )
                # AlreadyExists: an earlier pass's (nobody without the key can take this name).
                await self._kube.create_secret(namespace, body)
                entry.secret = True
            case CreatePod(join_at=join_at):
                return await self._create_pod(entry, bot, join_at)
            case DeletePod(uid=uid):
                await self._kube.delete_pod(namespace, children.pod_name(name), uid)
                if entry.pod is not None:
                    # Until the watch shows it, remember that this Pod is on its way out.
                    entry.pod["metadata"].setdefault("deletionTimestamp", format_time(now))
            case ArmJoin(join_at=join_at, address=address, request_id=request_id, not_before=not_before):
                if bot.spec is None:
                    return True
                line = self._join_line(
                    address=address,
                    token=self._token(bot),
                    request_id=request_id,
                    meeting_url=bot.spec.meeting_url,
                    bot_name=bot.spec.bot_name,
                    join_at=format_time(join_at),
                )
                self.dispatcher.arm(entry.key, join_at=join_at, not_before=not_before, line=line, request_id=request_id)
            case DisarmJoin():
                self.dispatcher.disarm(entry.key)
            case MoveSelfJoin(join_at=join_at, address=address):
                call = self._bots.move_self_join(address, self._token(bot), join_at=join_at)
                self._passes.spawn(self._bot_call(call))
            case Leave(address=address, reason=reason):
                if address not in entry.left:
                    # In flight or done; a failure takes it back (`_leave`), so it is asked again.
                    entry.left.add(address)
                    self._passes.spawn(self._leave(entry, address, self._token(bot), reason))
            case AddFinalizer() | RemoveFinalizer():
                assert entry.body is not None
                written = await self._kube.set_finalizer(
                    entry.body, FINALIZER, present=isinstance(action, AddFinalizer)
                )
                if written is not None and _newer(written, entry.body):
                    entry.body = _kept(written)
        return True

    def _defaults(self, bot: BotView) -> Defaults:
        """The operator's defaults, cut to the limits of the bot's class."""
        chosen = chosen_class(bot.spec, self._classes.snapshot()) if bot.spec is not None else None
        return class_defaults(self._settings.defaults, chosen if not isinstance(chosen, Refusal) else None)

    def _say(self, entry: _Entry, emit: Emit, now: datetime) -> None:
        """An Event leaves after the pass's status, in the background (runtime/events.py)."""
        if (emit.reason, emit.message) in entry.said or entry.body is None:
            return
        entry.said.add((emit.reason, emit.message))
        if emit.reason == LATE_STAGING:
            self._metrics.late_staging.inc()
        log.info("%s/%s %s: %s", *entry.key, emit.reason, emit.message)
        self._events.emit(entry.body, type_=emit.type.value, reason=emit.reason, message=emit.message, now=now)

    def _token(self, bot: BotView) -> str:
        return self._token_of(bot.namespace, bot.name, bot.uid)

    def _token_of(self, namespace: str, name: str, uid: str) -> str:
        """The bot's bearer token, computed (never stored or read back: `core.tokens`)."""
        return tokens.bot_token(self._settings.token_key, namespace=namespace, name=name, uid=uid)

    def _secret_name(self, bot: BotView) -> str:
        return children.secret_name(bot.name, tokens.secret_tag(self._settings.token_key, uid=bot.uid))

    async def _create_pod(self, entry: _Entry, bot: BotView, join_at: datetime) -> bool:
        """Create the bot's Pod; False when it cannot be (the next pass fails the bot with the reason)."""
        namespace, name = entry.key
        assert bot.spec is not None
        if bot.spec.bot_class_name is not None:
            await self._classes.learn(bot.spec.bot_class_name, self._kube)
        settings = self._settings
        built = bot_pod(
            name=name,
            namespace=namespace,
            uid=bot.uid,
            spec=bot.spec,
            classes=self._classes.snapshot(),
            default_template=settings.template,
            defaults=settings.defaults,
            self_join_delay_seconds=settings.self_join_delay_seconds,
            join_at=join_at,
            token_secret=self._secret_name(bot),
        )
        if isinstance(built, Refusal):
            entry.rejection, entry.rejection_reason = built.message, built.reason
            return False
        body = built.pod
        try:
            created = await self._kube.create_pod(namespace, body)
        except ApiError as error:
            if error.status not in _REFUSALS:
                raise
            # Retrying cannot help: the next pass fails the bot with the server's reason.
            entry.rejection = error.message
            return False
        if not created:
            conflict = await self._foreign_pod(namespace, name)
            if conflict is not None:
                entry.rejection, entry.rejection_reason = conflict, "NameConflict"
                return False
            return True
        self._stager.created(entry.key)
        # Seen as Pending until the watch brings the real one.
        body["metadata"]["uid"] = ""
        body["status"] = {"phase": "Pending"}
        if entry.pod is None:
            entry.pod = body
        return True

    async def _foreign_pod(self, namespace: str, name: str) -> str | None:
        """Why the Pod found under bot `name`'s Pod name is not its to use; None when it is (an earlier pass's)."""
        pod = children.pod_name(name)
        found = await self._kube.find_pod(namespace, pod)
        if found is None:
            # Gone since the AlreadyExists: the next pass creates it.
            return None
        if _controller(found) == name:
            # This bot's, or a predecessor's of the same name (deleted and created again): the
            # garbage collector removes a Pod whose owner is gone, and its deletion starts a new pass.
            return None
        return (
            f"Pod {pod!r} already exists and was not created by the operator for this ScheduledBot; "
            "it is left alone: delete or rename it, then apply the ScheduledBot again"
        )

    async def _leave(self, entry: _Entry, address: str, token: str, reason: str) -> None:
        try:
            await self._bots.leave(address, token, reason=reason)
        except BotUnreachable as error:
            delay = _FOLLOW_BACKOFF[min(entry.leave_failures, len(_FOLLOW_BACKOFF) - 1)]
            entry.leave_failures += 1
            log.warning("leave of %s/%s failed (%s); asking again in %.1f s", *entry.key, error, delay)
            entry.left.discard(address)
            self._passes.wake_in(entry.key, delay)
            return
        entry.leave_failures = 0

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
        entry.state_error = None
        if address is not None:
            entry.follower = self._passes.spawn(self._follow_loop(entry, address))

    async def _follow_loop(self, entry: _Entry, address: str) -> None:
        """Long-poll the bot's state: one request open per bot, answered on change."""
        failures = 0
        while True:
            if entry.body is None:
                return
            meta = entry.body["metadata"]
            token = self._token_of(meta["namespace"], meta["name"], meta["uid"])
            after = entry.report.version if entry.report is not None else 0
            try:
                report = await self._bots.state(address, token, after=after)
            except BotUnreachable as error:
                delay = _FOLLOW_BACKOFF[min(failures, len(_FOLLOW_BACKOFF) - 1)]
                failures += 1
                log.debug("state of %s unavailable (%s); again in %.1f s", address, error, delay)
                if failures == _STATE_FAILURES_TO_REPORT:
                    # Not the first failure: one lost connection must not make a verdict.
                    entry.state_error = str(error)
                    self.poke(entry.key)
                await asyncio.sleep(delay)
                continue
            failures = 0
            entry.state_error = None
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
            created_at=parse_time(meta["creationTimestamp"]),
            deleted_at=parse_time(deleted) if deleted else None,
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
            seconds = (parse_time(ready_at) - parse_time(created)).total_seconds()
            self._metrics.staging_time.observe(seconds)
        self._stager.ready(entry.key, seconds=seconds, at=self._clock.time())

    def _states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        # Called from the metrics server's thread while the loop adds and removes bots: copy
        # the values in one C-level step (the GIL is held throughout), then read the copy.
        for entry in tuple(self._entries.values()):
            state = ((entry.body or {}).get("status") or {}).get("state")
            if state:
                counts[state] = counts.get(state, 0) + 1
        return counts

    def _forget(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._passes.forget(key)
        if entry.follower is not None:
            entry.follower.cancel()
        self.dispatcher.disarm(key)
        if self._notify is not None:
            self._notify.forget(key)
        self._stager.forget(key)

    async def close(self) -> None:
        for key in list(self._entries):
            self._forget(key)
        await self.dispatcher.close()
        if self._notify is not None:
            await self._notify.close()
        await self._events.close()
        self._stager.close()
        await self._passes.close()


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
    deleted = meta.get("deletionTimestamp")
    finished = (terminated or {}).get("finishedAt")
    join_at = (meta.get("annotations") or {}).get(children.JOIN_AT_ANNOTATION)
    return PodView(
        name=meta["name"],
        uid=meta.get("uid") or "",
        phase=status.get("phase") or "Pending",
        ready=_pod_ready(pod),
        ip=status.get("podIP"),
        deleting=bool(deleted),
        waiting_reason=(waiting or {}).get("reason"),
        waiting_message=(waiting or {}).get("message"),
        exit_code=(terminated or {}).get("exitCode"),
        control_port=children.control_port_of(pod),
        finished_at=_instant(finished),
        join_at=_instant(join_at),
        meeting_url=_meeting_url(pod),
        gone_by=_instant(deleted),
    )


def _instant(text: Any) -> datetime | None:
    """A timestamp of an observed object; one that does not parse counts as absent."""
    if not isinstance(text, str):
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


def _meeting_url(pod: dict[str, Any]) -> str | None:
    """The meeting the Pod was made for: MEETING_URL of its bot (first) container."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    for env in containers[0].get("env") or []:
        if env.get("name") == ENV_MEETING_URL:
            value = env.get("value")
            return value if isinstance(value, str) else None
    return None
