"""Leader election: which of the operator's replicas writes (`--leader-elect`).

Hot standby
===========
Every replica watches the same objects, keeps the same picture and arms the same
joins: a join is idempotent at the bot (one `requestId` per bot and time), so both
may send it at the instant, and losing the leader at joinAt costs nothing. Only the
leader writes (status, Events, Pods, Secrets, finalizers): the engine asks
`leading()` before each write. A replica that becomes leader re-runs every bot's
pass at once (`on_leading`), so what the old leader left unwritten is written now.

`leading()` is a reading of the clock, not a flag: it turns false `renew_deadline`
after the latest successful renewal was sent, whether or not this loop got to run
since (an overloaded event loop, a frozen process). So a leader that cannot renew
has stopped writing before any standby may take over (`core/election.py` says why).

Rounds
======
One round reads the Lease (the holder skips the read and replaces the object it
last wrote, falling back to a read on a conflict), asks `core.election.decide`, and
writes what it says; the next round is at the instant it returns: the retry period,
or the moment a claim lapses. A failed call is logged and retried a retry period
later; nothing retries faster.

On shutdown the holder stops writing, then writes the Lease with no holder, so the
standby takes over at its next round instead of waiting out the lease.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from scheduledbot.adapters.kube import Kube
from scheduledbot.core.election import Step, Timing, decide, leading_until, record_of, released, spec_of
from scheduledbot.runtime.metrics import Metrics

log = logging.getLogger(__name__)


def identity() -> str:
    """This replica's name in the Lease: its Pod's name (the downward API), a random suffix.

    The suffix makes a restarted process a new candidate: it must not believe it still
    holds what its previous life held.
    """
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{secrets.token_hex(4)}"


class LeaderElector:
    def __init__(
        self,
        *,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        timing: Timing,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._timing = timing
        self._metrics = metrics
        self._clock = clock
        self._on_leading: Callable[[], None] = lambda: None
        #: The Lease as last read or written (with its resourceVersion); None: unknown or absent.
        self._lease: dict[str, Any] | None = None
        #: Its resourceVersion, and when this replica first saw that version (steady clock).
        self._seen_version: str | None = None
        self._seen_at = self._steady()
        #: Until when (steady clock, seconds) this replica may write; None: standby.
        self._until: float | None = None
        #: Whether this replica's taking the lead was announced (log, metric, `on_leading`).
        self._announced = False
        self._task: asyncio.Task[None] | None = None
        metrics.bind_leader(self.leading)

    def leading(self) -> bool:
        return self._until is not None and self._clock() < self._until

    def start(self, *, on_leading: Callable[[], None]) -> None:
        self._on_leading = on_leading
        self._task = asyncio.get_running_loop().create_task(self._run(), name="leader-election")

    async def stop(self) -> None:
        """Stop writing at once, then give the Lease up if this replica holds it."""
        self._step_down("released")
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        lease = self._lease
        if lease is None or record_of(lease.get("spec")).holder != self.identity:
            return
        record = released(record_of(lease.get("spec")), stamp=datetime.now(UTC))
        try:
            written = await self._kube.replace_lease(self._namespace, self._name, {**lease, "spec": spec_of(record)})
        except Exception as error:  # shutting down: the lease then lapses on its own
            log.warning("could not release the leader Lease %s/%s: %s", self._namespace, self._name, error)
            return
        if written is None:
            log.warning("did not release the leader Lease %s/%s: it changed meanwhile", self._namespace, self._name)
        else:
            log.info("released the leader Lease %s/%s", self._namespace, self._name)

    async def _run(self) -> None:
        while True:
            try:
                delay = await self._round()
            except Exception as error:  # the loop must outlive any failure: without it, nobody leads
                log.warning("leader election on %s/%s failed: %r", self._namespace, self._name, error)
                delay = self._timing.retry_period
            self._check_lapse()
            await asyncio.sleep(delay)

    async def _round(self) -> float:
        """One read-decide-write; returns the seconds until the next round."""
        began = self._clock()
        # The holder's fast path: replace what it wrote last, without reading first.
        if self._lease is not None and self.leading() and (seconds := await self._attempt(began)) is not None:
            return seconds
        self._observe(await self._kube.read_lease(self._namespace, self._name))
        seconds = await self._attempt(began)
        return self._timing.retry_period if seconds is None else seconds

    async def _attempt(self, began: float) -> float | None:
        """Decide on the Lease as known and write; the delay to the next round, None on a conflict."""
        lease = self._lease
        now = self._steady()
        decision = decide(
            observed=None if lease is None else record_of(lease.get("spec")),
            seen_at=self._seen_at,
            identity=self.identity,
            now=now,
            stamp=datetime.now(UTC),
            timing=self._timing,
        )
        wait = max(0.0, (decision.next_round - now).total_seconds())
        if decision.step is Step.WAIT or decision.write is None:
            self._step_down("lost")
            return wait
        spec = spec_of(decision.write)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self._name, "namespace": self._namespace},
                "spec": spec,
            }
            written = await self._kube.create_lease(self._namespace, body)
        else:
            written = await self._kube.replace_lease(self._namespace, self._name, {**lease, "spec": spec})
        if written is None:
            # Someone wrote first: what we decided on is stale; read again.
            self._lease = None
            return None
        self._observe(written)
        # Counted from the start of the round, before the write was sent: the API server may
        # have applied it at once, and a standby's count may start from then.
        self._until = leading_until(datetime.fromtimestamp(began, UTC), self._timing).timestamp()
        if not self._announced:
            self._announced = True
            log.info(
                "this replica (%s) leads (%s the Lease %s/%s)",
                self.identity,
                decision.step.value,
                self._namespace,
                self._name,
            )
            self._metrics.leadership_transitions.labels("acquired").inc()
            self._on_leading()
        return wait

    def _observe(self, lease: dict[str, Any] | None) -> None:
        self._lease = lease
        version = None if lease is None else str(lease["metadata"].get("resourceVersion"))
        if version != self._seen_version:
            self._seen_version = version
            self._seen_at = self._steady()

    def _check_lapse(self) -> None:
        if self._announced and not self.leading():
            self._step_down("lost")

    def _step_down(self, change: str) -> None:
        self._until = None
        if self._announced:
            self._announced = False
            log.warning("this replica (%s) no longer leads: Lease %s/%s", self.identity, self._namespace, self._name)
            self._metrics.leadership_transitions.labels(change).inc()

    def _steady(self) -> datetime:
        """The steady clock as a datetime, for `core.election` (which reads no clock)."""
        return datetime.fromtimestamp(self._clock(), UTC)
