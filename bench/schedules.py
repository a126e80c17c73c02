"""`python -m bench.schedules`: many BotSchedules with a long horizon, on the local cluster.

What it measures (docs/schedules.md, "Scale", shows a run):

- the time from applying N BotSchedules to every child created;
- the operator's resident memory with the schedules and their children;
- the time to plan every schedule again after a restart (the operator's
  `scheduledbot_schedules_first_plan_seconds`: start-up to the end of the first
  pass of every schedule it listed), and the writes that restart made (none
  are needed: the children and the status are already there);
- API writes per occurrence: the controller's creates, patches, deletes, status
  patches and Events (its `scheduledbot_schedule_actions` counters), divided by
  the children made.

Each schedule is a weekly RRULE on its own Zoom meeting (so the duplicate rule
skips nothing), at a time spread over the week, with a 28-day horizon: four
children each. Needs `make cluster`; every wait is bounded by `--timeout`.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
import urllib.error
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.processes import rss_bytes
from localcluster.bots import install_crd
from localcluster.operator import Metrics, OperatorProcess
from localcluster.testing import Cluster

HORIZON_SECONDS = 28 * 86400
ZONE = ZoneInfo("Europe/Berlin")
#: Start-up lists every bot and schedule: on a loaded machine that takes more than the harness's 30 s.
_READY_TIMEOUT = 300
_CHUNK = 100


def schedules(namespace: str, count: int, *, start: datetime) -> list[dict[str, Any]]:
    out = []
    for index in range(count):
        # Spread over the week, 7 minutes apart, from two hours ahead (no occurrence is due during the
        # run); dtstart is wall-clock time in the schedule's zone.
        dtstart = (start + timedelta(hours=2, minutes=7 * index)).astimezone(ZONE)
        out.append(
            {
                "apiVersion": "meetingbots.dev/v1alpha1",
                "kind": "BotSchedule",
                "metadata": {"name": f"weekly-{index:05d}", "namespace": namespace},
                "spec": {
                    "timeZone": ZONE.key,
                    "rrule": {"dtstart": dtstart.strftime("%Y-%m-%dT%H:%M:00"), "rule": "FREQ=WEEKLY"},
                    "horizonSeconds": HORIZON_SECONDS,
                    "botTemplate": {"spec": {"meetingUrl": f"https://zoom.us/j/{9000000000 + index}"}},
                },
            }
        )
    return out


def scrape(operator: OperatorProcess) -> Metrics:
    """One scrape; a scrape that fails is tried again a few times (the engine's bots-by-state gauge
    iterates its bots from the metrics thread, and fails now and then while bots are being added)."""
    for attempt in range(5):
        try:
            return operator.metrics()
        except urllib.error.HTTPError:
            if attempt == 4:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def actions(metrics: Metrics) -> dict[str, float]:
    return {
        dict(labels)["kind"]: value for labels, value in metrics.series("scheduledbot_schedule_actions_total").items()
    }


def wait_until(what: str, check: Callable[[], bool], *, deadline: float) -> float:
    """Seconds until `check()` holds, checked once a second; fails past `deadline` (time.monotonic())."""
    began = time.monotonic()
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within the time allowed")
        time.sleep(1)
    return time.monotonic() - began


def run(count: int, *, timeout: float, workdir: Path) -> dict[str, Any]:
    cluster = Cluster()
    install_crd(cluster)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/botschedules.meetingbots.dev")
    namespace = f"bench-sched-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", namespace)
    deadline = time.monotonic() + timeout
    operator = OperatorProcess(
        kubeconfig=cluster.kubeconfig,
        namespaces=[namespace],
        log_path=workdir / "operator.log",
        admin_kubeconfig=cluster.kubeconfig,
    )
    try:
        operator.start(timeout=_READY_TIMEOUT)
        bodies = schedules(namespace, count, start=datetime.now(UTC))
        began = time.monotonic()
        for at in range(0, count, _CHUNK):
            chunk = {"apiVersion": "v1", "kind": "List", "items": bodies[at : at + _CHUNK]}
            cluster.kubectl("apply", "-f", "-", input=json.dumps(chunk), timeout=300)
        applied = time.monotonic() - began
        expected = 4 * count

        def created() -> bool:
            return actions(scrape(operator)).get("creates", 0) >= expected

        wait_until("every child created", created, deadline=deadline)
        first_round = time.monotonic() - began
        # The children's watch events come back to their schedules: let those passes finish.
        time.sleep(5)
        before = actions(scrape(operator))
        rss_running = rss_bytes(operator.pid)
        listed = json.loads(cluster.kubectl("get", "scheduledbots", "-n", namespace, "-o", "json").stdout)["items"]

        operator.restart(timeout=_READY_TIMEOUT)

        def planned() -> bool:
            return scrape(operator).get("scheduledbot_schedules_first_plan_seconds") is not None

        wait_until("every schedule planned after the restart", planned, deadline=deadline)
        restarted = scrape(operator)
        after = actions(restarted)
        rss_restarted = rss_bytes(operator.pid)
        writes = sum(before.get(kind, 0) for kind in ("creates", "patches", "deletes", "status_writes", "events"))
        return {
            "schedules": count,
            "horizon_days": HORIZON_SECONDS // 86400,
            "children": len(listed),
            "apply_seconds": round(applied, 1),
            "all_children_created_seconds": round(first_round, 1),
            "operator_rss_mb": round(rss_running / 2**20, 1),
            "operator_rss_after_restart_mb": round(rss_restarted / 2**20, 1),
            "plan_all_after_restart_seconds": round(
                restarted.get("scheduledbot_schedules_first_plan_seconds") or 0.0, 2
            ),
            "writes_after_restart": {kind: after.get(kind, 0) for kind in ("creates", "status_writes", "events")},
            "controller_writes": before,
            "api_writes_per_occurrence": round(writes / max(len(listed), 1), 2),
        }
    finally:
        operator.close()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.schedules", description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1000, help="BotSchedules to apply (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=1200, help="bound of the whole run, s (default %(default)s)")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-schedules-") as workdir:
        figures = run(args.schedules, timeout=args.timeout, workdir=Path(workdir))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
