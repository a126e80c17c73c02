"""The deliverer: sends each bot's recorded state changes to its sink, off the engine's critical path.

Who writes what
===============
Only the engine writes a bot's status, one pass at a time, so the outbox
(`status.notifications`) has a single writer and no update can be lost between
two of them. The deliverer plugs into each pass at two points:

- `fold` (pure work, inside the pass, before its one status write): the state
  change the pass makes is appended to the outbox (`core.notify.record_change`),
  the outcome of the last attempt is folded in and the next delivery chosen
  (`core.notify.plan_delivery`), and the NotificationsFailing condition derived.
- `published` (after that write): what was decided is carried out: a delivery
  started (now, or by a timer at its back-off), an expiry timer set, Events,
  metrics. An attempt's outcome is kept here until a status that folds it has been
  written, then the engine is poked for that pass.

So a delivery starts only once the change it announces is in the API server, and
a restarted operator finds in the status exactly what it still has to send: its
first pass of each bot plans the head of the outbox again, under the same id.

Never in the way of a join
==========================
Deliveries are tasks of their own; a pass only folds and schedules, it never
waits for a sink. At most `--notify-concurrency` are in flight at once (the
others wait for a slot, and count as in flight for their bot, so only the head of
each outbox is ever sent). Every wait is a timer at a computed instant: the
back-off of the head, or the expiry of what cannot be sent (no sink). Around each
known joinAt the deliverer keeps quiet (`core.notify_quiet`): no attempt starts and
no outcome asks for a pass from a second before to half a second after, so the
join dispatcher has the event loop to itself at the instant.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from scheduledbot.adapters.egress import EgressClient, EgressPolicy, redact
from scheduledbot.adapters.kube import ApiError, Kube, denied_secret
from scheduledbot.adapters.notify import Notifier
from scheduledbot.api.models import ScheduledBotStatus
from scheduledbot.api.notify import SigningKey, SigningKeyError, parse_signing_key, signing_key_from_secret
from scheduledbot.api.states import RESCHEDULABLE_STATES
from scheduledbot.core.model import BotView
from scheduledbot.core.notify import (
    Attempt,
    Deliver,
    DeliveryPlan,
    Failure,
    RetryPolicy,
    Sink,
    Verdict,
    classify,
    plan_delivery,
    record_change,
    resolve_sink,
)
from scheduledbot.core.notify_quiet import JoinInstants
from scheduledbot.core.notify_status import with_notifications_condition
from scheduledbot.runtime.config import Settings
from scheduledbot.timestamps import parse_time

log = logging.getLogger(__name__)

Key = tuple[str, str]

_LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600)


def egress_policy(settings: Settings) -> EgressPolicy:
    """The sinks the operator may reach: https to public addresses, and the administrator's extra hosts."""
    return EgressPolicy(admitted_hosts=settings.extra_notify_hosts, denied_networks=settings.notify_denied_networks)


def default_signing_key(settings: Settings) -> SigningKey | None:
    """The default sink's key, read at start-up so that a bad file stops the operator with its reason."""
    path = settings.default_notify_signing_key_file
    if path is None:
        return None
    source = f"--default-notify-signing-key-file {path}"
    try:
        text = path.read_text()
    except OSError as error:
        raise SigningKeyError(f"{source}: cannot read it: {error.strerror}") from None
    return parse_signing_key(text, source=source)


class NotifyMetrics:
    """Deliveries by outcome, given-up changes, latency, and the queue (pending, in flight)."""

    def __init__(self, registry: CollectorRegistry, queue: Callable[[], tuple[int, int]]) -> None:
        self.attempts = Counter(
            "scheduledbot_notification_attempts",
            "Notification delivery attempts, by outcome (delivered, retry, rejected, gone)",
            ["outcome"],
            registry=registry,
        )
        self.given_up = Counter(
            "scheduledbot_notifications_given_up",
            "State changes whose notification was given up, by reason (Rejected, Expired, Gone)",
            ["reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "scheduledbot_notification_delivery_seconds",
            "State change recorded to its notification accepted by the sink",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        registry.register(_Queue(queue))


class _Queue(Collector):
    def __init__(self, source: Callable[[], tuple[int, int]]) -> None:
        self._source = source

    def collect(self) -> Any:
        pending, in_flight = self._source()
        yield GaugeMetricFamily(
            "scheduledbot_notifications_pending", "State changes waiting to be delivered, all bots", value=pending
        )
        yield GaugeMetricFamily(
            "scheduledbot_notifications_in_flight", "Deliveries under way or waiting for a slot", value=in_flight
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Target:
    """Who a delivery is about and where it goes, as of the pass that planned it."""

    name: str
    namespace: str
    uid: str
    meeting_url: str | None
    sink: Sink


@dataclass(slots=True)
class _Bot:
    #: The outcome of the last attempt, until a written status has folded it.
    attempt: Attempt | None = None
    #: The attempt folded into the status the current pass is writing.
    folded: Attempt | None = None
    plan: DeliveryPlan | None = None
    target: _Target | None = None
    in_flight: bool = False
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    pending: int = 0


class Notifications:
    """The notification side of the engine's passes; see the module's docstring."""

    def __init__(
        self,
        *,
        settings: Settings,
        kube: Kube,
        registry: CollectorRegistry,
        notifier: Notifier | None = None,
        policy: RetryPolicy | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._default_url = settings.default_notify_url
        self._default_key = default_signing_key(settings)
        self._egress = egress_policy(settings)
        if self._default_url is not None:
            self._egress.check_url(self._default_url)  # refused at start-up, not at the first change
        self._kube = kube
        self._notifier = notifier
        self._policy = policy or RetryPolicy(max_retry_seconds=settings.notify_max_retry_seconds)
        self._jitter = jitter
        self._slots = asyncio.Semaphore(settings.notify_concurrency)
        self._concurrency = settings.notify_concurrency
        self._bots: dict[Key, _Bot] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._poke: Callable[[Key], None] = lambda key: None
        #: Every bot's joinAt still ahead, so that deliveries keep clear of the join instants.
        self._joins = JoinInstants()
        self.metrics = NotifyMetrics(registry, self._queue)

    def bind(self, poke: Callable[[Key], None]) -> None:
        """The engine's poke: an attempt's outcome asks for a pass that writes it."""
        self._poke = poke

    # Inside a pass ------------------------------------------------------------------------

    def fold(self, key: Key, bot: BotView, status: ScheduledBotStatus, now: datetime) -> ScheduledBotStatus:
        """`status` (the pass's decision) with its state change recorded and the outbox advanced. Pure work."""
        ahead = status.join_at is not None and status.state in RESCHEDULABLE_STATES
        self._joins.set(key, parse_time(status.join_at).timestamp() if ahead and status.join_at else None)
        sink = resolve_sink(bot.spec.notify if bot.spec is not None else None, default_url=self._default_url)
        status = record_change(before=bot.status, after=status, sink=sink, now=now)
        if status.notifications is None and bot.status.notifications is None:
            return status
        entry = self._bots.setdefault(key, _Bot())
        plan = plan_delivery(
            uid=bot.uid,
            notifications=status.notifications,
            sink=sink,
            attempt=entry.attempt,
            in_flight=entry.in_flight,
            policy=self._policy,
            jitter=self._jitter(),
            now=now,
        )
        entry.folded, entry.plan = entry.attempt, plan
        if sink is not None:
            meeting_url = bot.spec.meeting_url if bot.spec is not None else None
            entry.target = _Target(
                name=bot.name, namespace=bot.namespace, uid=bot.uid, meeting_url=meeting_url, sink=sink
            )
        status = status.model_copy(update={"notifications": plan.notifications})
        return with_notifications_condition(
            status, previous=bot.status.conditions or (), generation=bot.generation, now=now
        )

    def published(self, key: Key, body: dict[str, Any] | None) -> None:
        """The status `fold` made is written: act on its plan."""
        entry = self._bots.get(key)
        if entry is None or entry.plan is None:
            return
        plan, folded = entry.plan, entry.folded
        entry.plan = entry.folded = None
        if folded is not None and entry.attempt is folded:
            entry.attempt = None
        entry.pending = len((plan.notifications.pending if plan.notifications else None) or ())
        self._account(folded, plan, body, entry.target)
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if plan.deliver is not None and entry.target is not None:
            self._schedule(key, entry, plan.deliver, entry.target)
        elif plan.wake_at is not None:
            entry.timer = _call_at(plan.wake_at, self._poke, key)

    def forget(self, key: Key) -> None:
        """The bot is gone (or replaced under its name): what it had pending went with its status."""
        self._joins.set(key, None)
        entry = self._bots.pop(key, None)
        if entry is None:
            return
        if entry.timer is not None:
            entry.timer.cancel()
        if entry.task is not None:
            entry.task.cancel()

    # Deliveries ---------------------------------------------------------------------------

    def _schedule(self, key: Key, entry: _Bot, deliver: Deliver, target: _Target) -> None:
        if deliver.not_before is None:
            self._start(key, entry, deliver, target)
            return
        entry.timer = _call_at(deliver.not_before, self._start, key, entry, deliver, target)

    def _start(self, key: Key, entry: _Bot, deliver: Deliver, target: _Target, *, quieted: bool = False) -> None:
        if self._bots.get(key) is not entry or entry.in_flight:
            return
        # Deferred once at most: with joins every second, windows follow one another without end.
        quiet = None if quieted else self._joins.quiet_until(time.time())
        if quiet is not None:
            entry.timer = _call_at(
                datetime.fromtimestamp(quiet, UTC),
                functools.partial(self._start, quieted=True),
                key,
                entry,
                deliver,
                target,
            )
            return
        entry.timer = None
        entry.in_flight = True
        entry.task = self._spawn(self._send(key, entry, deliver, target))

    async def _send(self, key: Key, entry: _Bot, deliver: Deliver, target: _Target) -> None:
        try:
            async with self._slots:
                attempt = await self._attempt(deliver, target)
        except Exception as error:  # one sink's trouble must not end the deliverer
            log.exception("notification %s could not be sent", deliver.id)
            attempt = Attempt(id=deliver.id, failure=Failure.CONNECTION, detail=type(error).__name__)
        entry.in_flight = False
        entry.task = None
        entry.attempt = attempt
        if self._bots.get(key) is not entry:
            return
        quiet = self._joins.quiet_until(time.time())
        if quiet is None:
            self._poke(key)
        else:
            # The outcome waits in memory; a pass that comes anyway (a watch event) folds it sooner.
            _call_at(datetime.fromtimestamp(quiet, UTC), self._poke, key)

    async def _attempt(self, deliver: Deliver, target: _Target) -> Attempt:
        key = await self._signing_key(deliver, target)
        if isinstance(key, Attempt):
            return key
        if self._notifier is None:
            self._notifier = Notifier(EgressClient(policy=self._egress, max_connections=self._concurrency))
        return await self._notifier.deliver(
            deliver,
            url=target.sink.url,
            key=key,
            name=target.name,
            namespace=target.namespace,
            uid=target.uid,
            meeting_url=target.meeting_url,
        )

    async def _signing_key(self, deliver: Deliver, target: _Target) -> SigningKey | Attempt:
        """The key for this delivery, read now (so an edited Secret is used at once), or why there is none."""
        ref = target.sink.key_ref
        if ref is None:
            if self._default_key is None:
                return Attempt(id=deliver.id, failure=Failure.KEY, detail="the operator has no default signing key")
            return self._default_key
        where = f"Secret {target.namespace}/{ref.name}"
        try:
            secret = await self._kube.read_opted_in_secret(target.namespace, ref.name)
        except ApiError as error:
            return Attempt(id=deliver.id, failure=Failure.KEY, detail=denied_secret(target.namespace, ref.name, error))
        if secret is None:
            return Attempt(id=deliver.id, failure=Failure.KEY, detail=f"{where}: not found")
        try:
            return signing_key_from_secret(secret, ref=ref)
        except SigningKeyError as error:
            return Attempt(id=deliver.id, failure=Failure.KEY, detail=str(error))

    # Accounting ---------------------------------------------------------------------------

    def _account(
        self, folded: Attempt | None, plan: DeliveryPlan, body: dict[str, Any] | None, target: _Target | None
    ) -> None:
        if folded is not None:
            verdict = classify(folded)
            self.metrics.attempts.labels(verdict.value).inc()
            notes = plan.notifications
            if verdict is Verdict.RETRY and notes is not None and notes.failures == 1 and body is not None:
                where = redact(target.sink.url) if target is not None else "its sink"
                message = f"notification {folded.id} to {where} failed: {notes.last_error}"
                if notes.next_attempt_at:
                    message += f"; retrying at {notes.next_attempt_at}"
                self._event(body, "NotificationsFailing", message)
        if plan.delivered is not None:
            delay = datetime.now(UTC) - parse_time(plan.delivered.at)
            self.metrics.latency.observe(max(delay.total_seconds(), 0.0))
        for lost in plan.given_up:
            self.metrics.given_up.labels(lost.reason).inc()
            if body is not None:
                message = f"notification {lost.id} (state {lost.state.value}) given up: {lost.reason}: {lost.message}"
                self._event(body, "NotificationDropped", message)

    def _event(self, body: dict[str, Any], reason: str, message: str) -> None:
        log.warning("%s/%s %s: %s", body["metadata"]["namespace"], body["metadata"]["name"], reason, message)
        post = self._kube.post_event(body, type_="Warning", reason=reason, message=message, now=datetime.now(UTC))
        self._spawn(post)

    def _queue(self) -> tuple[int, int]:
        bots = self._bots.values()
        return sum(entry.pending for entry in bots), sum(entry.in_flight for entry in bots)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        # An empty context, as the engine's tasks: nothing of a kopf handler's context is kept alive.
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for key in list(self._bots):
            self.forget(key)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._notifier is not None:
            await self._notifier.close()


def _call_at(moment: datetime, callback: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
    """`callback(*args)` at the wall-clock `moment`, by the loop's clock (computed once, no polling)."""
    loop = asyncio.get_running_loop()
    delay = max((moment - datetime.now(UTC)).total_seconds(), 0.0)
    return loop.call_at(loop.time() + delay, callback, *args)
