"""Two replicas of the operator on one namespace, leader election on a real Lease.

Both run as users run them (`--leader-elect`), against the local control plane; the
Lease, the ScheduledBots and their Events are the API server's own. The status
history is what `kubectl get --watch` shows: every state a user could have seen.
Nothing is mocked; every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from localcluster.bots import Bots, soon
from localcluster.operator import OperatorProcess
from localcluster.testing import Cluster
from localcluster.waiting import until
from scheduledbot.runtime.webhook_ca import secret_name as ca_secret_name

from .test_install import restricted_kubeconfig  # noqa: F401  (a fixture)

pytestmark = pytest.mark.cluster

LEASE = "scheduledbot-operator"
#: The defaults, written out: what the Deployment runs with, and what the failover measures.
LEASE_SECONDS, RENEW_SECONDS, RETRY_SECONDS = 15, 10, 2
#: The order of states a bot moves through; a status must never move back in it.
ORDER = ["scheduled", "staged", "joining", "waiting_room", "joined", "recording", "leaving", "ended", "failed"]


@dataclass
class StatusHistory:
    """Every (state, joinSignaledAt) of each bot, in the order `kubectl get --watch` showed them."""

    cluster: Cluster
    namespace: str
    seen: list[tuple[float, str, str, str]] = field(default_factory=list)
    _process: subprocess.Popen[str] | None = None

    def __enter__(self) -> StatusHistory:
        # kubectl's watch output goes through a tab writer: fields are split on "|", not tabs.
        template = '{.metadata.name}{"|"}{.status.state}{"|"}{.status.joinSignaledAt}{"\\n"}'
        self._process = subprocess.Popen(
            ["kubectl", "get", "scheduledbots", "-n", self.namespace, "--watch", "-o", f"jsonpath={template}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)},
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            name, state, signalled = [part.strip() for part in [*line.split("|"), "", ""][:3]]
            self.seen.append((time.time(), name, state, signalled))

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def of(self, name: str) -> list[tuple[str, str]]:
        """The bot's distinct (state, joinSignaledAt) in order, repeats of the same one collapsed."""
        shown: list[tuple[str, str]] = []
        for _, bot, state, signalled in list(self.seen):
            if bot == name and state and (not shown or shown[-1] != (state, signalled)):
                shown.append((state, signalled))
        return shown

    def first_change_after(self, moment: float) -> float | None:
        return next((at for at, _, state, _ in list(self.seen) if at > moment and state), None)


def lease(cluster: Cluster, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "lease", LEASE, "-n", namespace, "-o", "json").stdout
    spec: dict[str, Any] = json.loads(out)["spec"]
    return spec


def leading(operator: OperatorProcess) -> bool:
    return operator.metrics().get("scheduledbot_leader") == 1


def the_leader(operators: list[OperatorProcess], *, timeout: float = 20) -> OperatorProcess:
    """The one replica that leads, once exactly one does."""
    found: list[OperatorProcess] = []

    def one_leads() -> bool:
        found[:] = [o for o in operators if o.alive() and leading(o)]
        return len(found) == 1

    until(one_leads, timeout=timeout, what="exactly one leader")
    return found[0]


@pytest.fixture
def replicas(make_operator: Callable[..., OperatorProcess], namespace: str) -> Iterator[list[OperatorProcess]]:
    args = [
        "--leader-elect",
        "--leader-election-namespace",
        namespace,
        "--leader-election-lease-duration",
        str(LEASE_SECONDS),
        "--leader-election-renew-deadline",
        str(RENEW_SECONDS),
        "--leader-election-retry-period",
        str(RETRY_SECONDS),
    ]
    yield [make_operator(args=args), make_operator(args=args)]


def assert_never_back(history: StatusHistory, name: str) -> list[str]:
    """The bot's states only move forward, and its joinSignaledAt, once set, never changes."""
    shown = history.of(name)
    states = [state for state, _ in shown]
    positions = [ORDER.index(state) for state in states]
    assert positions == sorted(positions), f"{name}: status went back: {states}"
    signalled = {s for _, s in shown if s}
    assert len(signalled) <= 1, f"{name}: joinSignaledAt changed: {sorted(signalled)}"
    return states


def assert_joined_once(bots: Bots, names: list[str], join_at: datetime) -> list[float]:
    """One arrival per bot at the meeting server, none before joinAt; their lateness in seconds."""
    lateness = []
    for name in names:
        arrivals = bots.arrivals(f"{bots.namespace}-{name}")
        assert len(arrivals) == 1, f"{name}: {len(arrivals)} arrivals"
        lateness.append(arrivals[0]["timestamp"] - join_at.timestamp())
        assert lateness[-1] >= 0, f"{name} arrived before joinAt"
    pods = Counter(p["metadata"]["name"] for p in bots.pods())
    assert pods == Counter(f"{name}-bot" for name in names), "one Pod per bot, ever"
    return lateness


def events_by_reason(bots: Bots, name: str) -> Counter[str]:
    return Counter(e["reason"] for e in bots.events(name))


def test_two_replicas_one_leader_one_writer_one_join_per_bot(
    replicas: list[OperatorProcess], bots: Bots, cluster: Cluster, namespace: str
) -> None:
    leader = the_leader(replicas)
    [standby] = [o for o in replicas if o is not leader]
    assert lease(cluster, namespace)["leaseDurationSeconds"] == LEASE_SECONDS
    assert standby.health_latency() is not None, "the standby answers /healthz"
    names = [f"pair-{i}" for i in range(4)]
    join_at = soon(20)
    with StatusHistory(cluster, namespace) as history:
        for name in names:
            bots.apply(bots.manifest(name, join_at=join_at, lead=12))
        for name in names:
            bots.wait_state(name, "recording", timeout=60)
        time.sleep(1)  # the last watch lines
    lateness = assert_joined_once(bots, names, join_at)
    for name in names:
        states = assert_never_back(history, name)
        # The status follows the bot's latest report: a pass may find it past joined already.
        assert states[:3] == ["scheduled", "staged", "joining"] and states[-1] == "recording", states
        assert bots.status(name)["joinedBy"] == "signal"
        reasons = events_by_reason(bots, name)
        assert max(reasons.values()) == 1, f"{name}: doubled Events: {reasons}"
        for reason in ("Scheduled", "Staged", "JoinSignaled"):
            assert reasons[reason] == 1, f"{name}: {reason} posted {reasons[reason]} times"
    # Only the leader wrote; both sent the join signal (idempotent at the bot).
    assert leader.metrics().total("scheduledbot_status_writes_total") >= len(names) * 4
    assert standby.metrics().total("scheduledbot_status_writes_total") == 0
    assert standby.metrics().total("scheduledbot_join_lateness_seconds_count") == len(names)
    assert leading(leader) and not leading(standby)
    print(f"\narrival lateness with two replicas: max {max(lateness) * 1000:.0f} ms")


def test_a_killed_leaders_standby_signals_the_join_on_time_and_takes_over_the_writes(
    replicas: list[OperatorProcess], bots: Bots, cluster: Cluster, namespace: str
) -> None:
    leader = the_leader(replicas)
    [standby] = [o for o in replicas if o is not leader]
    before = lease(cluster, namespace)
    names = [f"kill-{i}" for i in range(3)]
    join_at = soon(24)
    with StatusHistory(cluster, namespace) as history:
        for name in names:
            bots.apply(bots.manifest(name, join_at=join_at, lead=14))
        for name in names:
            bots.wait_state(name, "staged", timeout=30)
        until(
            lambda: (
                all(
                    any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in (p.get("status") or {}).get("conditions", [])
                    )
                    for p in bots.pods()
                )
                and len(bots.pods()) == len(names)
            ),
            timeout=15,
            what="bot Pods Ready",
        )
        assert time.time() < join_at.timestamp() - 3, "too slow to stage: the kill would not precede the join"
        time.sleep(0.5)  # the standby's own watch brings the Ready Pods and it arms their joins
        leader.kill()
        killed = time.time()
        until(lambda: leading(standby), timeout=LEASE_SECONDS + RETRY_SECONDS + 5, what="the standby leads")
        for name in names:
            bots.wait_state(name, "recording", timeout=LEASE_SECONDS + 30)
        time.sleep(1)
    first_write = history.first_change_after(killed)
    assert first_write is not None
    failover = first_write - killed
    print(
        f"\nfailover: leader killed {join_at.timestamp() - killed:.1f} s before joinAt; first status write by the "
        f"new leader {failover:.2f} s after the kill (lease {LEASE_SECONDS} s, retry {RETRY_SECONDS} s)"
    )
    # The standby may take over only after the lease lapses unrenewed: at most a lease and a retry period after.
    assert failover <= LEASE_SECONDS + RETRY_SECONDS + 2
    lateness = assert_joined_once(bots, names, join_at)
    print(f"arrival lateness, join signalled by the standby: max {max(lateness) * 1000:.0f} ms")
    for name in names:
        assert_never_back(history, name)
        assert bots.status(name)["joinedBy"] == "signal", "the standby's signal, not the bot's safety net"
        reasons = events_by_reason(bots, name)
        # The new leader finds the bot already in the meeting: it writes that state directly,
        # so there may be no Joined event; none may come twice.
        assert max(reasons.values()) == 1, f"{name}: doubled Events: {reasons}"
        for reason in ("Scheduled", "Staged", "JoinSignaled"):
            assert reasons[reason] == 1, f"{name}: {reason} posted {reasons[reason]} times"
    after = lease(cluster, namespace)
    assert after.get("holderIdentity") != before.get("holderIdentity")
    assert after["leaseTransitions"] == before["leaseTransitions"] + 1
    assert standby.metrics().get("scheduledbot_leadership_transitions_total", change="acquired") == 1


def test_both_replicas_serve_the_webhook_with_certificates_the_one_ca_bundle_trusts(
    restricted_kubeconfig: Path,  # noqa: F811  (the fixture imported above)
    make_operator: Callable[..., OperatorProcess],
    namespace: str,
    cluster: Cluster,
) -> None:
    # As installed: only the manifests' RBAC, the configuration installed, its caBundle patched.
    args = ["--webhook-configuration=patch", "--leader-elect", f"--leader-election-namespace={namespace}"]
    first = make_operator(kubeconfig=restricted_kubeconfig, args=args)
    second = make_operator(kubeconfig=restricted_kubeconfig, args=args)
    configuration = first.webhook_configuration()
    assert configuration is not None
    bundles = {w["clientConfig"]["caBundle"] for w in configuration["webhooks"]}
    assert len(bundles) == 1
    trusted = ssl.create_default_context(cadata=base64.b64decode(bundles.pop()).decode())
    for replica in (first, second):
        # The API server's view: the Service may send a review to either; both must pass its check.
        with (
            socket.create_connection(("127.0.0.1", replica.webhook_port), timeout=5) as raw,
            trusted.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() is not None
    secrets = json.loads(cluster.kubectl("get", "secrets", "-n", namespace, "-o", "json").stdout)["items"]
    assert [s["metadata"]["name"] for s in secrets] == [ca_secret_name(first.webhook_config)]


def test_a_leader_stopped_on_purpose_hands_over_within_a_retry_period(
    replicas: list[OperatorProcess], cluster: Cluster, namespace: str
) -> None:
    leader = the_leader(replicas)
    [standby] = [o for o in replicas if o is not leader]
    leader.stop()
    stopped = time.monotonic()
    assert not lease(cluster, namespace).get("holderIdentity") or leading(standby), "released, or taken already"
    until(lambda: leading(standby), timeout=RETRY_SECONDS + 3, what="the standby leads")
    print(f"\nhandover after a graceful stop: {time.monotonic() - stopped:.2f} s")
