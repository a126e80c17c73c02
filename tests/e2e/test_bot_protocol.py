"""The bot protocol end to end: the safety net, leaving on deletion, the waiting room,
a failing bot command, and the token. Real control plane, real Pods, real meeting server.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from localcluster.bots import Bots, soon
from localcluster.operator import OperatorProcess
from localcluster.waiting import until

pytestmark = pytest.mark.cluster


def test_operator_down_at_join_at_the_bot_joins_by_its_deadline_once(operator: OperatorProcess, bots: Bots) -> None:
    join_at = soon(12)
    bots.apply(bots.manifest("alone", join_at=join_at, lead=10))
    bots.wait_state("alone", "staged", timeout=15)
    pod_ready = bots.cluster.kubectl(
        "wait", "--for=condition=Ready", "pod/alone-bot", "-n", bots.namespace, "--timeout=15s", check=False
    )
    assert pod_ready.returncode == 0, pod_ready.stderr
    # Stop the operator one second before joinAt, and keep it away past the bot's own deadline.
    time.sleep(max(0.0, join_at.timestamp() - time.time() - 1))
    operator.stop()
    meeting_id = f"{bots.namespace}-alone"
    arrivals = until(lambda: bots.arrivals(meeting_id), timeout=15, interval=0.2, what="the bot's own join")
    assert len(arrivals) == 1, "the bot joined on its own"
    print(f"\nself-join lateness at the meeting: {(arrivals[0]['timestamp'] - join_at.timestamp()) * 1000:.0f} ms")
    operator.start()
    # The restarted operator has read the bot's own report once it records who joined.
    status = bots.wait_for("alone", ".status.joinedBy", "deadline", timeout=20)
    assert status["state"] in ("joined", "recording"), status
    assert "joinSignaledAt" not in status
    assert len(bots.arrivals(meeting_id)) == 1, "no second join after the operator came back"


def test_deleting_a_bot_during_the_meeting_makes_it_leave_before_its_pod_goes(
    operator: OperatorProcess, bots: Bots
) -> None:
    bots.apply(bots.manifest("goodbye", join_at=soon(8), lead=6))
    bots.wait_state("goodbye", "joined", timeout=30)
    assert "meetingbots.dev/leave-meeting" in bots.get("goodbye")["metadata"]["finalizers"]
    bots.cluster.kubectl("delete", "sbot", "goodbye", "-n", bots.namespace, "--timeout=40s")
    departures = bots.meeting(f"{bots.namespace}-goodbye")["departures"]
    assert [d["cause"] for d in departures] == ["left"]
    bots.cluster.wait_for_pod_deleted(bots.namespace, "goodbye-bot", timeout=40)
    assert bots.pods() == []


def test_a_waiting_room_shows_until_the_bot_is_admitted(operator: OperatorProcess, bots: Bots) -> None:
    meeting_id = f"{bots.namespace}-lobby"
    bots.admin(meeting_id, body={"waitingRoom": True})
    bots.apply(bots.manifest("lobby", join_at=soon(8), lead=6, meeting=meeting_id))
    waiting = bots.wait_state("lobby", "waiting_room", timeout=30)
    assert waiting["joinedBy"] == "signal"
    bots.admin(meeting_id, "admit")
    joined = bots.wait_state("lobby", "joined", timeout=15)
    assert joined["joinedAt"]


def test_a_bot_command_that_exits_non_zero_fails_with_the_exit_code(operator: OperatorProcess, bots: Bots) -> None:
    template = {
        "spec": {
            "containers": [
                {
                    "name": "bot",
                    "image": "scheduledbot-operator:dev",
                    "command": [
                        "scheduledbot-agent",
                        "--",
                        "python",
                        "-c",
                        "import sys; print('@state joined'); sys.exit(3)",
                    ],
                }
            ]
        }
    }
    bots.apply(bots.manifest("crash", join_at=soon(8), lead=6, template=template))
    failed = bots.wait_state("crash", "failed", timeout=30)
    assert "code 3" in failed["message"], failed


def test_join_without_the_token_gets_401_and_the_bot_does_not_join(operator: OperatorProcess, bots: Bots) -> None:
    bots.apply(bots.manifest("locked", join_at=soon(600), lead=599))
    bots.wait_state("locked", "staged", timeout=15)
    bots.cluster.kubectl("wait", "--for=condition=Ready", "pod/locked-bot", "-n", bots.namespace, "--timeout=15s")
    ip = bots.pods()[0]["status"]["podIP"]
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        request = urllib.request.Request(
            f"http://{ip}:8181/v1/join",
            data=b'{"requestId": "x"}',
            method="POST",
            headers={"Content-Type": "application/json", **headers},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
    assert bots.arrivals(f"{bots.namespace}-locked") == []
    assert bots.status("locked")["state"] == "staged"
