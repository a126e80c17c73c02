"""The operator under trouble that only the real API server shows.

- A bot released by a reschedule beyond its lead, then rescheduled back within it
  while its Pod is still terminating, waits for the Pod's DELETED event and does not
  spin: the other bots are signalled as usual, /healthz answers, and the bot is staged
  again with a new Pod once the old one is gone.
- A bot that joined on its own while the operator was down past the join deadline is
  followed, not failed Missed, and its lateness is its own join's.

Real control plane, `kubectl apply`, the demo bot and the local meeting server;
timings are printed (bench/ and docs/ hold figures), not asserted.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from localcluster.bots import Bots, soon
from localcluster.operator import OperatorProcess

pytestmark = pytest.mark.cluster

OTHERS = ("alpha", "bravo", "charlie")
HOLD = {"metadata": {"finalizers": ["meetingbots.dev/test-hold"]}}
RELEASE = json.dumps({"metadata": {"finalizers": None}})


def until_joined(bots: Bots, name: str, *, timeout: float) -> dict[str, Any]:
    """The bot's status once it has joined (`joinedAt` set), whatever state it is in by then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = bots.status(name)
        if status.get("joinedAt"):
            return status
        assert status.get("state") != "failed", f"{name} failed: {status}"
        time.sleep(0.5)
    raise AssertionError(f"{name} did not join in {timeout:g} s: {bots.status(name)}")


def test_a_reschedule_out_of_the_lead_and_back_leaves_the_others_on_time(operator: OperatorProcess, bots: Bots) -> None:
    others_at = soon(35)
    for name in OTHERS:
        bots.apply(bots.manifest(name, join_at=others_at, lead=20))
    bots.apply(bots.manifest("restless", join_at=soon(25), lead=20, joinDeadlineSeconds=60))
    bots.wait_state("restless", "staged", timeout=20)
    kubectl = bots.cluster.kubectl
    kubectl("wait", "--for=condition=Ready", "--timeout=30s", "pod/restless-bot", "-n", bots.namespace, timeout=45)
    # A finalizer of the test's keeps the released Pod Terminating for as long as the test
    # wants (a slow kubelet, a Pod with a long grace period): the window of the bug.
    kubectl("patch", "pod", "restless-bot", "-n", bots.namespace, "--type=merge", "-p", json.dumps(HOLD))
    try:
        # Beyond the lead: the Pod is released; once that shows, back within the lead.
        bots.apply(bots.manifest("restless", join_at=soon(60), lead=20, joinDeadlineSeconds=60))
        bots.wait_state("restless", "scheduled", timeout=10)
        bots.apply(bots.manifest("restless", join_at=soon(15), lead=20, joinDeadlineSeconds=60))
        pod = json.loads(kubectl("get", "pod", "restless-bot", "-n", bots.namespace, "-o", "json").stdout)
        assert pod["metadata"].get("deletionTimestamp"), "the released Pod is still Terminating"

        latencies: list[float | None] = []
        for _ in range(10):
            latencies.append(operator.health_latency(timeout=5))
            time.sleep(0.5)
        answered = [round(x * 1000, 1) for x in latencies if x is not None]
        print(f"\n/healthz while the bot waits for its Pod to go (ms): {answered}")
        assert len(answered) == len(latencies), "/healthz must answer while a bot waits for its Pod to go"

        for name in OTHERS:
            # Signalled, not joined by the Pod's own safety net 2 s after joinAt.
            joined = bots.wait_for(name, ".status.joinedBy", "signal", timeout=60)
            print(f"{name}: join signal {joined['joinLatenessMs']} ms after joinAt")
        assert bots.status("restless")["state"] == "scheduled", "no second Pod while the first is Terminating"
    finally:
        kubectl("patch", "pod", "restless-bot", "-n", bots.namespace, "--type=merge", "-p", RELEASE, check=False)

    restless = until_joined(bots, "restless", timeout=60)
    print(f"restless: joined by {restless['joinedBy']}, {restless.get('joinLatenessMs')} ms after joinAt")
    mine = [p for p in bots.pods() if p["metadata"]["name"] == "restless-bot"]
    assert len(mine) == 1, "one Pod for the bot at a time"
    metrics = operator.metrics()
    passes, spins = metrics.total("scheduledbot_passes_total"), metrics.total("scheduledbot_pass_spins_total")
    print(f"passes: {passes:.0f} for {len(OTHERS) + 1} bots; passes that asked for 'now' without change: {spins:.0f}")
    assert spins == 0


def test_a_bot_that_joined_on_its_own_while_the_operator_was_down_past_the_deadline_is_followed(
    operator: OperatorProcess, bots: Bots
) -> None:
    join_at = soon(14)
    bots.apply(bots.manifest("alone", join_at=join_at, lead=10, joinDeadlineSeconds=6))
    bots.wait_state("alone", "staged", timeout=15)
    bots.cluster.kubectl(
        "wait", "--for=condition=Ready", "--timeout=20s", "pod/alone-bot", "-n", bots.namespace, timeout=30
    )
    operator.kill()  # kill -9 before joinAt; down until past the join deadline (joinAt + 6 s)
    time.sleep(max(0.0, (join_at - datetime.now(UTC)).total_seconds() + 9))
    operator.start()
    joined = until_joined(bots, "alone", timeout=30)
    print(f"\nalone: {joined['state']}, joined by {joined['joinedBy']}, {joined['joinLatenessMs']} ms after joinAt")
    assert joined["joinedBy"] == "deadline"
    arrivals = bots.arrivals(f"{bots.namespace}-alone")
    assert len(arrivals) == 1
    print(
        f"arrival at the meeting server: {(arrivals[0]['timestamp'] - join_at.timestamp()) * 1000:.0f} ms after joinAt"
    )
    assert "Missed" not in {e["reason"] for e in bots.events("alone")}
