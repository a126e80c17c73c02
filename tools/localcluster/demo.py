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
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from localcluster.bots import Bots, install_crd
from localcluster.meeting import MeetingServerProcess
from localcluster.operator import OperatorProcess
from localcluster.testing import Cluster

NAMESPACE = "demo"
NAME = "standup"
JOIN_IN_SECONDS = 60
LEAD_SECONDS = 30
RECORD_SECONDS = 5


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    cluster = Cluster()
    say("installing the ScheduledBot CRD")
    print(install_crd(cluster))
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    cluster.kubectl(
        "delete", "sbot", NAME, "-n", NAMESPACE, "--ignore-not-found", "--timeout=60s", check=False, timeout=120
    )
    log = cluster.layout.logs / "demo-operator.log"
    log.unlink(missing_ok=True)
    with MeetingServerProcess() as meetings:
        bots = Bots(cluster=cluster, namespace=NAMESPACE, meeting_server=meetings)
        meeting = f"{NAMESPACE}-{NAME}"
        say(f"local meeting server at {meetings.base_url}; starting the operator (log: {log})")
        operator = OperatorProcess(
            kubeconfig=cluster.kubeconfig,
            namespaces=[NAMESPACE],
            extra_meeting_hosts=[meetings.address],
            log_path=log,
        )
        watcher: subprocess.Popen[bytes] | None = None
        with operator:
            try:
                join_at = (datetime.now(UTC) + timedelta(seconds=JOIN_IN_SECONDS)).replace(microsecond=0)
                # The offset form a calendar export writes; the operator shows it normalized to UTC.
                manifest = bots.manifest(
                    NAME, join_at=join_at.strftime("%Y-%m-%dT%H:%M:%S+0000"), lead=LEAD_SECONDS, botName="Demo Bot"
                )
                say(f"applying ScheduledBot {NAME}: joins at {join_at:%H:%M:%S} UTC, staged {LEAD_SECONDS} s before")
                print(json.dumps(manifest["spec"], indent=2))
                bots.apply(manifest)
                say("kubectl get sbot -w")
                watcher = subprocess.Popen(
                    ["kubectl", "get", "sbot", "-n", NAMESPACE, "-w"],
                    env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
                )
                bots.wait_state(NAME, "recording", timeout=JOIN_IN_SECONDS + 60)
                time.sleep(RECORD_SECONDS)
                bots.admin(meeting, "end")
                status = bots.wait_state(NAME, "ended", timeout=30)
                arrivals = bots.arrivals(meeting)
            finally:
                if watcher is not None:
                    time.sleep(1)  # let the watch print the last transition
                    watcher.terminate()
                    watcher.wait(timeout=5)
    arrival_ms = (arrivals[0]["timestamp"] - join_at.timestamp()) * 1000
    say("done")
    print(f"joinAt                   {status['joinAt']}")
    print(f"join signal sent at      {status.get('joinSignaledAt')} (joined by {status.get('joinedBy')})")
    print(f"lateness in status       {status.get('joinLatenessMs')} ms (status.joinLatenessMs: the bot's join start)")
    print(f"lateness at the meeting  {arrival_ms:.1f} ms (the meeting server's arrival stamp minus joinAt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
