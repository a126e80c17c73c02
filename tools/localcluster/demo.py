"""`make demo`: watch a ScheduledBot join a local meeting about a minute from now.

`make demo` has already started the local control plane (`make cluster`). This
installs the CRD, starts the local meeting server and the operator (admitting the
meeting server's host, an admin-only setting), applies a sample ScheduledBot that
joins about a minute later, and shows `kubectl get sbot -w` live. Once the bot is
recording for a few seconds the meeting ends, and the demo prints how late the
join signal left the operator and how late the bot arrived at the meeting.

Everything it starts it stops; the control plane keeps running (`make cluster-down`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from localcluster.meeting import MeetingServerProcess

ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG = ROOT / ".cluster" / "kubeconfig"
NAMESPACE = "demo"
NAME = "standup"
MEETING = "demo-standup"
JOIN_IN_SECONDS = 60
LEAD_SECONDS = 30
RECORD_SECONDS = 5


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", *args],
        input=stdin,
        text=True,
        capture_output=True,
        check=check,
        env={**os.environ, "KUBECONFIG": str(KUBECONFIG)},
        timeout=120,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def wait_state(state: str, timeout: int) -> dict[str, object]:
    kubectl(
        "wait", f"--for=jsonpath={{.status.state}}={state}", f"--timeout={timeout}s", f"sbot/{NAME}", "-n", NAMESPACE
    )
    return dict(json.loads(kubectl("get", "sbot", NAME, "-n", NAMESPACE, "-o", "json").stdout)["status"])


def start_operator(extra_host: str, log: Path) -> subprocess.Popen[bytes]:
    health = free_port()
    process = subprocess.Popen(
        [
            "scheduledbot-operator",
            "--namespace",
            NAMESPACE,
            "--extra-meeting-hosts",
            extra_host,
            "--health-port",
            str(health),
            "--metrics-port",
            "0",
            "--webhook-listen",
            "127.0.0.1",
            "--webhook-port",
            str(free_port()),
            "--webhook-config-name",
            "scheduledbot-demo",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "KUBECONFIG": str(KUBECONFIG)},
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=1):
                return process
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.2)
    raise SystemExit(f"the operator did not start; see {log}")


def main() -> int:
    say("installing the ScheduledBot CRD")
    print(kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")).stdout.strip())
    kubectl("wait", "--for=condition=Established", "crd/scheduledbots.meetingbots.dev", "--timeout=30s")
    kubectl("create", "namespace", NAMESPACE, check=False)
    kubectl("delete", "sbot", NAME, "-n", NAMESPACE, "--ignore-not-found", "--timeout=60s", check=False)
    log = ROOT / ".cluster" / "logs" / "demo-operator.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with MeetingServerProcess() as meetings:
        host = meetings.base_url.split("://", 1)[1]
        say(f"local meeting server at {meetings.base_url}; starting the operator (log: {log})")
        operator = start_operator(host, log)
        watcher: subprocess.Popen[bytes] | None = None
        try:
            join_at = (datetime.now(UTC) + timedelta(seconds=JOIN_IN_SECONDS)).replace(microsecond=0)
            manifest = {
                "apiVersion": "meetingbots.dev/v1alpha1",
                "kind": "ScheduledBot",
                "metadata": {"name": NAME, "namespace": NAMESPACE},
                "spec": {
                    "meetingUrl": meetings.meeting_url(MEETING),
                    "botName": "Demo Bot",
                    "joinAt": join_at.strftime("%Y-%m-%dT%H:%M:%S+0000"),
                    "stagingLeadSeconds": LEAD_SECONDS,
                },
            }
            say(f"applying ScheduledBot {NAME}: joins at {join_at:%H:%M:%S} UTC, staged {LEAD_SECONDS} s before")
            print(json.dumps(manifest["spec"], indent=2))
            kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
            say("kubectl get sbot -w")
            watcher = subprocess.Popen(
                ["kubectl", "get", "sbot", "-n", NAMESPACE, "-w"], env={**os.environ, "KUBECONFIG": str(KUBECONFIG)}
            )
            wait_state("recording", JOIN_IN_SECONDS + 60)
            time.sleep(RECORD_SECONDS)
            request = urllib.request.Request(
                f"{meetings.base_url}/admin/meetings/{MEETING}/end", data=b"{}", method="POST"
            )
            urllib.request.urlopen(request, timeout=5).close()
            status = wait_state("ended", 30)
            with urllib.request.urlopen(f"{meetings.base_url}/admin/meetings/{MEETING}", timeout=5) as r:
                arrivals = json.loads(r.read())["arrivals"]
        finally:
            if watcher is not None:
                time.sleep(1)  # let the watch print the last transition
                watcher.terminate()
                watcher.wait(timeout=5)
            os.killpg(operator.pid, signal.SIGTERM)
            operator.wait(timeout=20)
    arrival_ms = (arrivals[0]["timestamp"] - join_at.timestamp()) * 1000
    say("done")
    print(f"joinAt                   {status['joinAt']}")
    print(f"join signal sent at      {status.get('joinSignaledAt')} (joined by {status.get('joinedBy')})")
    print(f"lateness at the operator {status.get('joinLatenessMs')} ms (status.joinLatenessMs)")
    print(f"lateness at the meeting  {arrival_ms:.1f} ms (the meeting server's arrival stamp minus joinAt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
