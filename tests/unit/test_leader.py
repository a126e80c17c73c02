"""Two electors on one Lease, on virtual loop time (looptime): nothing sleeps for real.

The Lease lives in a fake store with the API server's optimistic concurrency (a
replace with a stale resourceVersion is a conflict, a second create finds it exists);
the end-to-end tests (tests/e2e/test_replicas.py) run the same against the real one.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from scheduledbot.core.election import Timing
from scheduledbot.runtime.leader import LeaderElector
from scheduledbot.runtime.metrics import Metrics

pytestmark = [pytest.mark.looptime(end=3600), pytest.mark.timeout(10)]

TIMING = Timing()  # 15 s / 10 s / 2 s


class LeaseStore:
    """One Lease, as the API server keeps it: every write bumps the resourceVersion."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.writes = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise OSError("connection refused")

    def _stored(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.writes += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        return copy.deepcopy(self.lease)

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self._check()
        return None if self.lease is not None else self._stored(body)

    async def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self._check()
        if self.lease is None or body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            return None
        return self._stored(body)

    @property
    def holder(self) -> str | None:
        return None if self.lease is None else self.lease["spec"].get("holderIdentity")


@pytest.fixture
def store() -> LeaseStore:
    return LeaseStore()


@pytest.fixture
async def electors(store: LeaseStore) -> AsyncIterator[list[tuple[LeaderElector, list[int], Metrics]]]:
    made = []
    loop = asyncio.get_running_loop()
    for name in ("a", "b"):
        metrics = Metrics()
        elector = LeaderElector(
            kube=store,  # type: ignore[arg-type]
            namespace="ops",
            name="scheduledbot-operator",
            identity=name,
            timing=TIMING,
            metrics=metrics,
            clock=loop.time,
        )
        made.append((elector, [0], metrics))
    yield made


def start(elector: LeaderElector, woken: list[int]) -> None:
    def wake() -> None:
        woken[0] += 1

    elector.start(on_leading=wake)


async def seconds_until(predicate: Callable[[], bool], *, limit: float = 60) -> float:
    """Virtual seconds until `predicate` holds, looked at every 0.1 s."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    for _ in range(int(limit * 10)):
        if predicate():
            return loop.time() - began
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {limit} s")


def leader_value(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("scheduledbot_leader")


async def test_the_first_candidate_leads_the_second_stands_by_and_the_leader_renews_every_retry_period(
    store: LeaseStore, electors: list[tuple[LeaderElector, list[int], Metrics]]
) -> None:
    (a, woke_a, metrics_a), (b, woke_b, metrics_b) = electors
    start(a, woke_a)
    await asyncio.sleep(0.1)
    start(b, woke_b)
    await asyncio.sleep(60)
    assert a.leading() and not b.leading()
    assert store.holder == "a"
    assert (woke_a, woke_b) == ([1], [0])
    assert (leader_value(metrics_a), leader_value(metrics_b)) == (1, 0)
    # A create, then one renewal every 2 s: 30 writes in 60 s, no more.
    assert store.writes == 31
    await a.stop()
    await b.stop()


async def test_a_dead_leaders_standby_takes_over_a_lease_after_it_last_saw_it_renewed(
    store: LeaseStore, electors: list[tuple[LeaderElector, list[int], Metrics]]
) -> None:
    (a, woke_a, _), (b, woke_b, metrics_b) = electors
    start(a, woke_a)
    await asyncio.sleep(0.1)
    start(b, woke_b)
    await asyncio.sleep(10)
    assert a._task is not None
    a._task.cancel()  # dies without a word: no release
    # The last renewal was at most a retry period before the death; the standby saw it at
    # its next look (at most a retry period later) and then waited the lease duration.
    took_over = await seconds_until(b.leading)
    assert 15 - 2 <= took_over <= 15 + 2 + 0.2, took_over
    assert not a.leading(), "the dead leader's renew deadline passed long before"
    assert store.holder == "b"
    assert store.lease is not None and store.lease["spec"]["leaseTransitions"] == 1
    assert woke_b == [1]
    assert metrics_b.registry.get_sample_value("scheduledbot_leadership_transitions_total", {"change": "acquired"}) == 1
    await b.stop()


async def test_a_leader_that_cannot_renew_stops_at_the_renew_deadline_and_leads_again_once_it_can(
    store: LeaseStore, electors: list[tuple[LeaderElector, list[int], Metrics]]
) -> None:
    (a, woke_a, metrics_a), _ = electors
    start(a, woke_a)
    await asyncio.sleep(1)
    assert a.leading()
    store.down = True  # the API server unreachable
    # The last renewal was sent at most a retry period before the cut.
    assert 10 - 2 <= await seconds_until(lambda: not a.leading()) <= 10 + 0.1
    assert leader_value(metrics_a) == 0
    await asyncio.sleep(5)
    assert metrics_a.registry.get_sample_value("scheduledbot_leadership_transitions_total", {"change": "lost"}) == 1
    store.down = False
    await asyncio.sleep(2.1)
    assert a.leading(), "still its own Lease: renewed at the next round"
    assert woke_a == [2], "leading again passes every bot again"
    await a.stop()


async def test_a_leader_stopped_on_purpose_releases_and_the_standby_takes_over_at_its_next_look(
    store: LeaseStore, electors: list[tuple[LeaderElector, list[int], Metrics]]
) -> None:
    (a, woke_a, _), (b, woke_b, _) = electors
    start(a, woke_a)
    await asyncio.sleep(0.1)
    start(b, woke_b)
    await asyncio.sleep(5)
    await a.stop()
    assert not a.leading(), "no write after stop"
    assert store.holder is None
    assert await seconds_until(b.leading) <= 2 + 0.2
    await b.stop()


async def test_of_two_candidates_at_once_exactly_one_creates_the_lease(
    store: LeaseStore, electors: list[tuple[LeaderElector, list[int], Metrics]]
) -> None:
    (a, woke_a, _), (b, woke_b, _) = electors
    start(a, woke_a)
    start(b, woke_b)
    await asyncio.sleep(30)
    assert [a.leading(), b.leading()].count(True) == 1
    assert woke_a[0] + woke_b[0] == 1
    await a.stop()
    await b.stop()
