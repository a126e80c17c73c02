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
is a single timer, replaced by every pass; a failed leave's retry asks for a pass
no later than its back-off, beside it, so the earlier of the two runs. Nothing
wakes on a fixed interval.

The engine wires the parts and runs the pass; who keeps what is in docs/design.md
("The runtime's parts").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from scheduledbot.adapters.bots import BotClient, JoinLine
from scheduledbot.adapters.kube import Kube
from scheduledbot.core.model import (
    AddFinalizer,
    CreatePod,
    CreateSecret,
    DeletePod,
    Emit,
    RemoveFinalizer,
    SignalOutcome,
)
from scheduledbot.core.plan import plan
from scheduledbot.runtime.cache import Cache, Key, controller
from scheduledbot.runtime.classes import ClassCatalog
from scheduledbot.runtime.clock import Clock, SystemClock
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.dispatchers import DispatcherFactory, LagReport, in_loop_dispatcher, threaded_dispatcher
from scheduledbot.runtime.executor import Executor
from scheduledbot.runtime.follower import Follower
from scheduledbot.runtime.metrics import Metrics
from scheduledbot.runtime.notify import Notifications
from scheduledbot.runtime.observe import Observer
from scheduledbot.runtime.publisher import Publisher
from scheduledbot.runtime.staging import Staging
from scheduledbot.runtime.workqueue import Passes

__all__ = ["DispatcherFactory", "Engine", "Key", "LagReport", "in_loop_dispatcher", "threaded_dispatcher"]

log = logging.getLogger(__name__)

#: API writes in flight at once, so that 10,000 bots found at start-up queue politely.
_CONCURRENT_PASSES = 32
#: What only the leader does (runtime/leader.py): every write to the API server. Joins,
#: the state long-poll and the bot's leave and move calls are idempotent at the bot: a
#: standby makes them too, so that it is ready the instant it leads.
_WRITES = (Emit, CreateSecret, CreatePod, DeletePod, AddFinalizer, RemoveFinalizer)


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
        classes = classes if classes is not None else ClassCatalog()
        #: Whether this replica may write now; always, without leader election.
        self._leading: Final = leading
        self._metrics: Final = metrics
        self._clock: Final[Clock] = clock or SystemClock()
        self._cache: Final = Cache()
        self._passes: Final[Passes[Key]] = Passes(
            run=self._pass,
            concurrency=_CONCURRENT_PASSES,
            label="/".join,
            known=self._cache.__contains__,
            log=log,
            clock=self._clock,
            spun=metrics.pass_spins.inc,
        )
        self._staging: Final = Staging(settings=settings, metrics=metrics, clock=self._clock, poke=self.poke)
        self.dispatcher: Final = dispatcher(self._signal_outcome, self._clock, metrics.observe_lag)
        self._executor: Final = Executor(
            settings=settings,
            kube=kube,
            bots=bots,
            classes=classes,
            stager=self._staging.stager,
            dispatcher=self.dispatcher,
            join_line=join_line,
            passes=self._passes,
        )
        self._follower: Final = Follower(bots=bots, token=self._token, changed=self.poke, spawn=self._passes.spawn)
        self._observer: Final = Observer(
            settings=settings, classes=classes, follower=self._follower, staging=self._staging
        )
        self._publisher: Final = Publisher(kube=kube, metrics=metrics)
        metrics.bind_states(self._cache.states)
        # State changes are recorded in the status they make; their delivery runs beside the passes.
        self._notify: Final = notifications
        if notifications is not None:
            notifications.bind(self.poke)

    # Watch events (from kopf) -----------------------------------------------------------

    def bot_event(self, kind: str | None, body: dict[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if kind == "DELETED":
            self._forget(key)
            return
        if self._cache.other_object(key, body):
            # Deleted and created again under the same name: a new bot.
            self._forget(key)
        if self._cache.take_bot(key, body):
            self.poke(key)

    def pod_event(self, kind: str | None, body: dict[str, Any]) -> None:
        owner = controller(body)
        if owner is None:
            return
        key = (body["metadata"]["namespace"], owner)
        seen = self._cache.entry(key)
        if kind == "DELETED":
            if seen.body is None:
                # A Pod whose ScheduledBot is already gone (or never seen): nothing to keep.
                self._forget(key)
                return
            if self._cache.pod_gone(seen, body):
                self._follower.lost(key)
            self.poke(key)
            return
        if self._cache.take_pod(seen, body):
            self._staging.note_ready(key, seen, body)
            self.poke(key)

    # Passes -------------------------------------------------------------------------------

    def poke(self, key: Key) -> None:
        """A pass of bot `key` soon (runtime/workqueue.py): after the one running, if one is."""
        self._passes.poke(key)

    def wake_all(self) -> None:
        """A pass of every bot now: this replica has just become the one that writes."""
        self._passes.poke_all(self._cache)

    async def _pass(self, key: Key) -> None:
        seen = self._cache.get(key)
        if seen is None or seen.body is None:
            return
        memory = self._executor.memory(key)
        self._metrics.passes.inc()
        now = self._clock.now()
        bot = self._observer.bot(seen)
        observed = self._observer.observe(key, seen, memory, bot, now)
        decision = plan(bot=bot, observed=observed, defaults=self._observer.defaults(bot), now=now)
        # The status is what `kubectl get sbot` shows: at a join instant a thousand passes
        # write it before their finalizers and Events (the signal is out either way).
        later = [a for a in decision.actions if isinstance(a, Emit | AddFinalizer)]
        for action in decision.actions:
            if action in later or (isinstance(action, _WRITES) and not self._leading()):
                continue
            if not await self._executor.act(key, seen, memory, bot, action, now):
                # Refused: this plan is void; the next pass decides with the refusal observed.
                self._passes.again(key)
                return
        if self._leading():
            status = decision.status
            if self._notify is not None:
                status = self._notify.fold(key, bot, status, now)
            await self._publisher.publish(key, seen, status)
            if self._notify is not None:
                self._notify.published(key, seen.body)
            for action in later:
                if not self._leading():
                    break  # the lease lapsed meanwhile: the new leader says the rest
                if isinstance(action, Emit):
                    self._publisher.say(key, seen, memory, action, now)
                else:
                    await self._executor.act(key, seen, memory, bot, action, now)
        elif decision.wake_at is not None and decision.wake_at <= now:
            # "Now" asks for the step after a write a standby did not make: the leader's
            # write (its watch event) or this replica's taking the lead brings the next pass.
            decision = replace(decision, wake_at=None)
        if self._cache.get(key) is not seen:
            return  # forgotten meanwhile (deleted, or created again): nothing of this bot's to follow or time
        self._follower.follow(key, decision.follow)
        if (
            decision.wake_at is not None
            and decision.wake_at <= now
            and not self._observer.changed(key, seen, memory, bot, observed)
        ):
            self._passes.defer_spin(key, now)
            return
        self._passes.wake(key, decision.wake_at, now)

    # The bot's own reports ---------------------------------------------------------------

    def _signal_outcome(self, key: Key, outcome: SignalOutcome) -> None:
        seen = self._cache.get(key)
        if seen is None:
            return
        if outcome.report is not None:
            self._follower.take(key, outcome.report)
        else:
            seen.signal = outcome
            if outcome.error is not None:
                self._metrics.signal_failures.inc()
            elif outcome.sent_at is not None:
                self._metrics.join_lateness.observe((outcome.sent_at - outcome.join_at).total_seconds())
                # Kept for the pass the bot's word brings (its answer, its state report, or the
                # join deadline's timer): a pass now would decide what the last one did. At an
                # instant of 1,000 bots those passes queued ahead of every answer's, and the
                # first `joining` status waited 0.7 s behind them.
                return
        self.poke(key)

    def _token(self, key: Key) -> str | None:
        """The bot's token for the follower; None once the bot is gone."""
        seen = self._cache.get(key)
        if seen is None or seen.body is None:
            return None
        meta = seen.body["metadata"]
        return self._executor.token_of(meta["namespace"], meta["name"], meta["uid"])

    # Bookkeeping --------------------------------------------------------------------------

    def _forget(self, key: Key) -> None:
        if self._cache.pop(key) is None:
            return
        self._passes.forget(key)
        self._follower.forget(key)
        self._executor.forget(key)
        self.dispatcher.disarm(key)
        if self._notify is not None:
            self._notify.forget(key)
        self._staging.forget(key)

    async def close(self) -> None:
        for key in self._cache:
            self._forget(key)
        await self.dispatcher.close()
        if self._notify is not None:
            await self._notify.close()
        await self._publisher.close()
        self._staging.close()
        await self._passes.close()
