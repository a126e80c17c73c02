"""The ScheduledBot lifecycle end to end: real control plane, `kubectl apply`, the operator
as users run it, bot Pods run by the local kubelet, the demo bot joining the local
meeting server. Nothing here is mocked; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from localcluster.bots import Bots, iso, parse_time, soon
from localcluster.operator import OperatorProcess

pytestmark = pytest.mark.cluster


def _lateness_ms(status: dict[str, object]) -> float:
    signalled = parse_time(str(status["joinSignaledAt"]))
    return (signalled - parse_time(str(status["joinAt"]))).total_seconds() * 1000


def test_a_bot_goes_scheduled_staged_joining_joined_recording_ended(operator: OperatorProcess, bots: Bots) -> None:
    join_at = soon(12)
    bots.apply(bots.manifest("standup", join_at=join_at, lead=6))
    scheduled = bots.wait_state("standup", "scheduled", timeout=10)
    assert scheduled["joinAt"] == iso(join_at).replace(".000Z", "Z") or parse_time(scheduled["joinAt"]) == join_at
    assert parse_time(scheduled["stageAt"]) == parse_time(scheduled["joinAt"]) - timedelta(seconds=6)
    assert scheduled["platform"] == "local"
    assert not bots.pods(), "nothing is staged before stageAt"

    staged = bots.wait_state("standup", "staged", timeout=20)
    assert parse_time(staged["stagedAt"]) >= parse_time(staged["stageAt"])
    assert staged["podName"] == "standup-bot"

    joined = bots.wait_state("standup", "joined", timeout=30)
    assert joined["joinedBy"] == "signal"
    print(
        f"\njoin signal lateness at the operator: {_lateness_ms(joined):.1f} ms "
        f"(status.joinLatenessMs={joined['joinLatenessMs']})"
    )
    bots.wait_state("standup", "recording", timeout=15)

    meeting_id = f"{bots.namespace}-standup"
    arrivals = bots.meeting(meeting_id)["arrivals"]
    assert len(arrivals) == 1
    arrival_ms = (arrivals[0]["timestamp"] - join_at.timestamp()) * 1000
    print(f"arrival at the meeting server, lateness against joinAt: {arrival_ms:.1f} ms")
    assert arrival_ms >= 0, "the bot must not arrive before joinAt"

    bots.admin(meeting_id, "end")
    ended = bots.wait_state("standup", "ended", timeout=20)
    assert ended["conditions"][0]["type"] == "Ready"
    pods = bots.pods()
    assert [p["metadata"]["name"] for p in pods] == ["standup-bot"], "exactly one Pod, ever"
    reasons = {e["reason"] for e in bots.events("standup")}
    assert {"Scheduled", "Staged", "JoinSignaled", "Joined"} <= reasons


def test_reschedule_while_scheduled_moves_the_timers(operator: OperatorProcess, bots: Bots) -> None:
    bots.apply(bots.manifest("later", join_at=soon(300), lead=60))
    before = bots.wait_state("later", "scheduled", timeout=10)
    new_time = soon(600)
    bots.apply(bots.manifest("later", join_at=new_time, lead=60))
    # The operator has seen the new spec once it reports the new generation.
    generation = str(bots.get("later")["metadata"]["generation"])
    after = bots.wait_for("later", ".status.observedGeneration", generation, timeout=10)
    assert parse_time(after["joinAt"]) == new_time.replace(microsecond=new_time.microsecond // 1000 * 1000)
    assert parse_time(after["stageAt"]) == parse_time(after["joinAt"]) - timedelta(seconds=60)
    assert after["stageAt"] != before["stageAt"]
    assert after["state"] == "scheduled"
    messages = [e["message"] for e in bots.events("later") if e["reason"] == "Rescheduled"]
    assert messages and before["joinAt"] in messages[0] and after["joinAt"] in messages[0]


def test_reschedule_while_staged_keeps_the_pod_within_the_lead(operator: OperatorProcess, bots: Bots) -> None:
    bots.apply(bots.manifest("keep", join_at=soon(14), lead=12))
    bots.wait_state("keep", "staged", timeout=15)
    uid = bots.pods()[0]["metadata"]["uid"]
    new_time = soon(10)  # still within the 12 s lead: the warm Pod stays
    bots.apply(bots.manifest("keep", join_at=new_time, lead=12))
    joined = bots.wait_state("keep", "joined", timeout=30)
    assert parse_time(joined["joinAt"]) == new_time.replace(microsecond=new_time.microsecond // 1000 * 1000)
    assert joined["joinedBy"] == "signal"
    assert [p["metadata"]["uid"] for p in bots.pods()] == [uid]
    print(f"\nrescheduled join lateness: {_lateness_ms(joined):.1f} ms")


def test_reschedule_while_staged_beyond_the_lead_releases_the_pod(operator: OperatorProcess, bots: Bots) -> None:
    bots.apply(bots.manifest("release", join_at=soon(12), lead=10))
    bots.wait_state("release", "staged", timeout=15)
    assert len(bots.pods()) == 1
    bots.apply(bots.manifest("release", join_at=soon(900), lead=10))
    status = bots.wait_state("release", "scheduled", timeout=15)
    assert "podName" not in status
    bots.cluster.kubectl("wait", "--for=delete", "pod/release-bot", "-n", bots.namespace, "--timeout=30s")
    assert bots.pods() == []


def test_editing_join_at_after_joining_is_rejected_by_the_server(operator: OperatorProcess, bots: Bots) -> None:
    bots.apply(bots.manifest("fixed", join_at=soon(8), lead=6))
    bots.wait_state("fixed", "joined", timeout=30)
    result = bots.apply(bots.manifest("fixed", join_at=soon(600), lead=6), check=False)
    assert result.returncode != 0
    assert "cannot change once the bot has started joining" in result.stderr, result.stderr


def test_cancel_while_scheduled_and_while_staged_leaves_no_pod_and_no_secret(
    operator: OperatorProcess, bots: Bots
) -> None:
    bots.apply(bots.manifest("waiting", join_at=soon(600), lead=60))
    bots.apply(bots.manifest("warm", join_at=soon(30), lead=28))
    bots.wait_state("waiting", "scheduled", timeout=10)
    bots.wait_state("warm", "staged", timeout=15)
    assert [s for s in bots.secrets() if s.startswith("warm-bot-token-")] and len(bots.pods()) == 1
    bots.cluster.kubectl("delete", "sbot", "waiting", "warm", "-n", bots.namespace, "--timeout=20s")
    bots.cluster.wait_for_pod_deleted(bots.namespace, "warm-bot", timeout=40)
    assert bots.pods() == []
    assert not [s for s in bots.secrets() if "-bot-token-" in s]


@pytest.mark.parametrize(
    ("join_at", "expected"),
    [
        ("2020-01-01T00:00:00Z", "joinAt cannot be in the past"),
        ("2031-06-16T16:24:00", "has no UTC offset"),
        ("next tuesday at noon", "is not an ISO 8601 date-time"),
    ],
)
def test_invalid_join_at_is_rejected_with_its_message(
    operator: OperatorProcess, bots: Bots, join_at: str, expected: str
) -> None:
    result = bots.apply(bots.manifest("bad", join_at=join_at), check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert "spec.joinAt" in result.stderr, result.stderr


def test_unsupported_platform_and_missing_url_are_rejected(operator: OperatorProcess, bots: Bots) -> None:
    manifest = bots.manifest("elsewhere", join_at=soon(600))
    manifest["spec"]["meetingUrl"] = "https://meet.example.com/room/42"
    result = bots.apply(manifest, check=False)
    assert result.returncode != 0
    assert "is not a supported meeting URL" in result.stderr and "Google Meet" in result.stderr, result.stderr
    del manifest["spec"]["meetingUrl"]
    result = bots.apply(manifest, check=False)
    assert result.returncode != 0
    assert "spec.meetingUrl: Required value" in result.stderr, result.stderr


def test_an_offset_without_a_colon_is_accepted_and_normalized(operator: OperatorProcess, bots: Bots) -> None:
    moment = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    bots.apply(bots.manifest("plus-zero", join_at=moment.strftime("%Y-%m-%dT%H:%M:%S+0000"), lead=60))
    status = bots.wait_state("plus-zero", "scheduled", timeout=10)
    assert status["joinAt"] == moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_operator_killed_between_staging_and_join_still_signals_on_time(operator: OperatorProcess, bots: Bots) -> None:
    join_at = soon(16)
    bots.apply(bots.manifest("restart", join_at=join_at, lead=12))
    bots.wait_state("restart", "staged", timeout=15)
    uid = bots.pods()[0]["metadata"]["uid"]
    operator.kill()
    operator.start()
    joined = bots.wait_state("restart", "joined", timeout=30)
    assert joined["joinedBy"] == "signal", "the restarted operator signalled, not the bot's safety net"
    assert [p["metadata"]["uid"] for p in bots.pods()] == [uid], "one Pod, the same one"
    print(f"\nlateness after an operator restart: {_lateness_ms(joined):.1f} ms")
    assert len(bots.meeting(f"{bots.namespace}-restart")["arrivals"]) == 1


def test_a_staged_pod_deleted_by_hand_is_created_again_before_join_at(operator: OperatorProcess, bots: Bots) -> None:
    bots.apply(bots.manifest("phoenix", join_at=soon(18), lead=15))
    bots.wait_state("phoenix", "staged", timeout=15)
    first = bots.pods()[0]["metadata"]["uid"]
    bots.cluster.kubectl("delete", "pod", "phoenix-bot", "-n", bots.namespace, "--wait=false")
    joined = bots.wait_state("phoenix", "joined", timeout=40)
    assert joined["joinedBy"] == "signal"
    uids = [p["metadata"]["uid"] for p in bots.pods()]
    assert len(uids) == 1 and uids[0] != first
    assert "PodRecreated" in {e["reason"] for e in bots.events("phoenix")}


def test_an_unpullable_image_fails_not_ready_in_time_with_the_pods_reason(
    operator: OperatorProcess, bots: Bots
) -> None:
    template = {
        "spec": {
            "containers": [
                {
                    "name": "bot",
                    "image": "unpullable.invalid/bot:1",
                    "command": ["python", "-m", "scheduledbot.demo_bot"],
                }
            ]
        }
    }
    bots.apply(bots.manifest("nopull", join_at=soon(6), lead=5, joinDeadlineSeconds=2, template=template))
    failed = bots.wait_state("nopull", "failed", timeout=30)
    assert failed["reason"] == "NotReadyInTime"
    assert "ImagePullBackOff" in failed["message"] or "ErrImagePull" in failed["message"], failed["message"]
    stalled = {c["type"]: c["status"] for c in failed["conditions"]}
    assert stalled == {"Ready": "False", "Reconciling": "False", "Stalled": "True"}
    assert "Failed" in {e["reason"] for e in bots.events("nopull")}


def test_status_is_kstatus_ready_with_observed_generation(operator: OperatorProcess, bots: Bots) -> None:
    bots.apply(bots.manifest("gitops", join_at=soon(3600), lead=60))
    bots.wait_state("gitops", "scheduled", timeout=10)
    bots.cluster.kubectl("wait", "--for=condition=Ready", "--timeout=10s", "sbot/gitops", "-n", bots.namespace)
    body = bots.get("gitops")
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert ready["observedGeneration"] == body["metadata"]["generation"]
    row = bots.cluster.kubectl("get", "sbot", "gitops", "-n", bots.namespace).stdout
    header = row.splitlines()[0].split()
    assert header[:5] == ["NAME", "STATE", "JOIN", "AT", "PLATFORM"], row
    assert json.loads(bots.cluster.kubectl("get", "sbot", "-n", bots.namespace, "-o", "json").stdout)["items"]


def test_a_template_the_api_server_would_refuse_is_rejected_when_applied(operator: OperatorProcess, bots: Bots) -> None:
    template = {"spec": {"containers": [{"name": "bot", "command": ["python", "-m", "scheduledbot.demo_bot"]}]}}
    result = bots.apply(bots.manifest("badtemplate", join_at=soon(600), template=template), check=False)
    assert result.returncode != 0
    assert "spec.template: the bot Pod would be refused" in result.stderr, result.stderr
    assert "spec.containers[0].image: Required value" in result.stderr, result.stderr


def test_kubectl_watch_shows_every_transition_and_metrics_count_the_join(operator: OperatorProcess, bots: Bots) -> None:
    watch = subprocess.Popen(
        [
            "kubectl",
            "get",
            "sbot",
            "-n",
            bots.namespace,
            "-w",
            "--no-headers",
            "-o",
            "custom-columns=NAME:.metadata.name,STATE:.status.state",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "KUBECONFIG": str(operator.kubeconfig)},
    )
    try:
        bots.apply(bots.manifest("watched", join_at=soon(8), lead=6))
        bots.wait_state("watched", "recording", timeout=30)
        bots.admin(f"{bots.namespace}-watched", "end")
        bots.wait_state("watched", "ended", timeout=20)
    finally:
        watch.terminate()
        out, _ = watch.communicate(timeout=10)
    seen = [line.split()[1] for line in out.splitlines() if len(line.split()) == 2 and "<none>" not in line]
    states = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    assert states == ["scheduled", "staged", "joining", "joined", "recording", "ended"], out
    metrics = operator.metrics()
    assert metrics.get("scheduledbot_join_lateness_seconds_count") == 1
    assert metrics.get("scheduledbot_pod_staging_seconds_count") == 1
    assert metrics.get("scheduledbot_bots", state="ended") == 1
    explain = bots.cluster.kubectl("explain", "scheduledbot.spec").stdout
    assert "joinAt" in explain and "ISO 8601" in explain
