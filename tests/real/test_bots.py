"""Bots on a real node: the demo bot in a container of the project's image, staged behind the
real kubelet's readiness probe, joining the meeting server over the Pod network; reschedule,
cancel and leave with real signals and grace periods; image pulls and exits as a container
runtime reports them; the operator's own Pod killed just before a join.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from localcluster.bots import parse_time, soon
from realnode import configs

from .conftest import Bots, Operator

pytestmark = pytest.mark.real_node

ORDER = ("scheduled", "staged", "joining", "joined", "recording", "leaving", "ended")


def _lateness_ms(bots: Bots, name: str, join_at: str) -> float:
    [arrival] = bots.arrivals(f"{bots.namespace}-{name}")
    return float((arrival["timestamp"] - parse_time(join_at).timestamp()) * 1000)


def _bot_template(*command: str, image: str = configs.OPERATOR_IMAGE, **container: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "bot", "image": image, "command": list(command), **container}]}}


def test_the_demo_bot_container_goes_from_scheduled_to_ended_and_joins_on_time(bots: Bots) -> None:
    join_at = soon(30)
    # No template: the operator's default one, the demo bot from the operator's own image.
    manifest = bots.manifest("standup", join_at=join_at, lead=20)
    bots.apply(manifest)
    with bots.watch("standup") as watch:
        staged = bots.wait_state("standup", "staged", timeout=30)
        pod = bots.wait_pod_ready(staged["podName"], timeout=25)
        # Ready is the kubelet's readiness probe of the agent's control API, before joinAt.
        [container] = pod["spec"]["containers"]
        assert container["image"] == configs.OPERATOR_IMAGE
        assert container["readinessProbe"]["httpGet"]["path"] == "/v1/ready"
        ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
        assert parse_time(ready["lastTransitionTime"]) < join_at
        # No API credentials in the bot's container.
        assert pod["spec"]["automountServiceAccountToken"] is False
        token = bots.exec(pod["metadata"]["name"], "python", "-c", "import os; print(os.listdir('/var/run/secrets'))")
        assert token.stdout.strip() == "['meetingbots.dev']", token

        joined = bots.wait_state("standup", "joined", timeout=60)
        assert joined["joinedBy"] == "signal"
        logs = bots.cluster.kubectl("logs", pod["metadata"]["name"], "-n", bots.namespace).stdout
        assert "The bot is ready." in logs and "Arrived in " in logs, logs
        bots.admin(f"{bots.namespace}-standup", "end")
        bots.wait_state("standup", "ended", timeout=30)
    assert watch.values[:4] == ["scheduled", "staged", "joining", "joined"], watch.values
    assert watch.values[-1] == "ended" and watch.values == sorted(watch.values, key=ORDER.index), watch.values
    lateness = _lateness_ms(bots, "standup", joined["joinAt"])
    print(
        f"\nreal node: arrival at the meeting server {lateness:.1f} ms after joinAt "
        f"(status.joinLatenessMs={joined['joinLatenessMs']})"
    )
    assert 0 <= lateness < 2000, "on time: after joinAt, and well before the bot's own safety net"


def test_reschedule_while_staged_keeps_the_warm_pod_and_moves_its_own_timer(bots: Bots) -> None:
    first = soon(20)
    bots.apply(bots.manifest("moved", join_at=first, lead=35))
    staged = bots.wait_state("moved", "staged", timeout=30)
    uid = bots.wait_pod_ready(staged["podName"], timeout=25)["metadata"]["uid"]
    # Later, still within the lead: the Pod stays, and its safety net (JOIN_AT + 2 s) must move too,
    # or it would join on its own at the first time.
    new_time = first + timedelta(seconds=12)
    bots.apply(bots.manifest("moved", join_at=new_time, lead=35))
    joined = bots.wait_state("moved", "joined", timeout=60)
    assert parse_time(joined["joinAt"]).timestamp() == pytest.approx(new_time.timestamp(), abs=0.001)
    assert joined["joinedBy"] == "signal"
    assert [p["metadata"]["uid"] for p in bots.pods()] == [uid], "the same warm Pod"
    lateness = _lateness_ms(bots, "moved", joined["joinAt"])
    print(f"\nreal node, rescheduled while staged: arrival {lateness:.1f} ms after the new joinAt")
    assert 0 <= lateness < 2000


def test_deleting_a_staged_bot_stops_its_container_with_sigterm_and_the_pod_goes(bots: Bots) -> None:
    bots.apply(bots.manifest("cancelled", join_at=soon(300), lead=290))
    staged = bots.wait_state("cancelled", "staged", timeout=30)
    name = staged["podName"]
    grace = bots.wait_pod_ready(name, timeout=25)["spec"]["terminationGracePeriodSeconds"]
    terminated = "{.status.containerStatuses[0].state.terminated"
    exits = f"{terminated}.reason}} {terminated}.exitCode}}"
    with bots.watch_pod(name, exits) as final:
        started = time.monotonic()
        bots.cluster.kubectl("delete", "sbot", "cancelled", "-n", bots.namespace, "--timeout=30s")
        bots.wait_pod(name, "delete", timeout=grace + 10)
        gone_after = time.monotonic() - started
    print(f"\nreal node: staged Pod gone {gone_after:.1f} s after the delete; its container: {final.values}")
    assert gone_after < grace, f"the container stopped on SIGTERM, not at the end of the {grace} s grace"
    assert final.values == ["Completed 0"], "the agent exits 0 on SIGTERM (137 would be SIGKILL)"
    assert bots.pods() == []
    assert bots.arrivals(f"{bots.namespace}-cancelled") == []


def test_deleting_a_bot_in_the_meeting_makes_it_leave_within_the_grace(bots: Bots) -> None:
    bots.apply(bots.manifest("goodbye", join_at=soon(20), lead=15))
    joined = bots.wait_state("goodbye", "joined", timeout=60)
    grace = bots.pod(joined["podName"])["spec"]["terminationGracePeriodSeconds"]
    started = time.monotonic()
    bots.cluster.kubectl("delete", "sbot", "goodbye", "-n", bots.namespace, f"--timeout={grace + 10}s")
    bots.wait_pod(joined["podName"], "delete", timeout=grace + 10)
    gone_after = time.monotonic() - started
    departures = bots.meeting(f"{bots.namespace}-goodbye")["departures"]
    assert [d["cause"] for d in departures] == ["left"]
    left_after = departures[0]["timestamp"] - (time.time() - gone_after)
    print(f"\nreal node: left the meeting {left_after:.1f} s after the delete; Pod gone after {gone_after:.1f} s")
    assert gone_after < grace
    assert bots.pods() == []


def test_an_unpullable_image_fails_not_ready_in_time_naming_the_pull_error(bots: Bots) -> None:
    # Pulled from 127.0.0.1:1, where nothing listens: the pull fails at once, on this machine.
    template = _bot_template(
        "python", "-m", "scheduledbot.demo_bot", image="127.0.0.1:1/scheduledbot/absent:1", imagePullPolicy="Always"
    )
    bots.apply(bots.manifest("nopull", join_at=soon(15), lead=12, joinDeadlineSeconds=3, template=template))
    failed = bots.wait_state("nopull", "failed", timeout=60)
    assert failed["reason"] == "NotReadyInTime"
    assert "ErrImagePull" in failed["message"] or "ImagePullBackOff" in failed["message"], failed["message"]
    print(f"\nreal node, unpullable image: {failed['message']}")


def test_a_container_that_exits_before_join_at_fails_with_its_exit_code(bots: Bots) -> None:
    template = _bot_template("python", "-c", "import sys; sys.exit(7)")
    bots.apply(bots.manifest("early", join_at=soon(60), lead=55, template=template))
    failed = bots.wait_state("early", "failed", timeout=60)
    assert "7" in failed["message"], failed
    print(f"\nreal node, container exited before joinAt: {failed['reason']}: {failed['message']}")
    assert bots.arrivals(f"{bots.namespace}-early") == []


def test_the_operators_pod_killed_before_join_at_comes_back_and_the_bot_joins_once(
    bots: Bots, operator: Operator
) -> None:
    """Two ways are right, and which comes first depends on how fast the Deployment brings the
    operator back: the bot's own timer at joinAt + 2 s (`joinedBy: deadline`), or the restarted
    operator's signal, on time or late (`joinedBy: signal`), which may also reach the bot just
    as its timer fires. Either way: one join, no later than the safety net's, and the status
    catches up."""
    join_at = soon(40)
    bots.apply(bots.manifest("unattended", join_at=join_at, lead=35))
    staged = bots.wait_state("unattended", "staged", timeout=30)
    bots.wait_pod_ready(staged["podName"], timeout=25)
    before = {p["metadata"]["uid"] for p in operator.running_pods()}
    time.sleep(max(0.0, join_at.timestamp() - 2 - time.time()))
    killed_at = time.time()
    bots.cluster.kubectl(
        "delete",
        "pod",
        "-n",
        "scheduledbot-system",
        "-l",
        "app.kubernetes.io/name=scheduledbot-operator",
        "--grace-period=0",
        "--force",
        "--wait=false",
    )
    operator.wait_available()
    back = operator.running_pods()
    assert back and not {p["metadata"]["uid"] for p in back} & before, "the Deployment made new Pods"
    status = bots.wait_state("unattended", "recording", timeout=60)  # the status caught up
    arrivals = bots.arrivals(f"{bots.namespace}-unattended")
    assert len(arrivals) == 1, "one join"
    lateness = _lateness_ms(bots, "unattended", status["joinAt"])
    started = min(
        parse_time(p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]).timestamp() for p in back
    )
    print(
        f"\nreal node, both replicas killed {join_at.timestamp() - killed_at:.1f} s before joinAt, the first new one "
        f"started {started - join_at.timestamp():+.1f} s from joinAt; joined by {status['joinedBy']}, "
        f"arrival {lateness:.0f} ms after joinAt"
    )
    assert 0 <= lateness < 3000, "no later than the bot's own timer (joinAt + 2 s) and its request"
    if status["joinedBy"] == "deadline":
        assert lateness >= 2000, "the bot's own timer, at joinAt + 2 s"
        assert "joinSignaledAt" not in status
    else:
        assert status["joinedBy"] == "signal"
        assert parse_time(status["joinSignaledAt"]).timestamp() > killed_at, "by the new operator"
