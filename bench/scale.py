"""Scale while waiting: N ScheduledBots in `scheduled` (joinAt hours ahead).

Measured, with a fresh operator watching only this phase's namespace:
- creation -> `scheduled`: for each bot, the watch event that first shows
  `status.state` minus the moment its create call returned (both this process's clock);
- resident memory (VmRSS of /proc/<pid>/status) once all are scheduled and settled;
- CPU seconds (utime + stime of /proc/<pid>/stat) over an idle window, per minute;
- restart: SIGKILL, start again, and create one fresh bot right after the start. The
  operator is caught up when (a) its `scheduledbot_bots` gauge, summed over states,
  counts all N + 1 bots (it has read and taken every bot in again, the fresh one
  included) AND (b) the fresh bot shows `state: scheduled` on our watch (it handles new
  work, not only the backlog). Reported: seconds from the new process's start;
- then 200 more bots at 20 per second, one create at a time: creation -> `scheduled` when
  the operator is not saturated by a burst (with the N waiting in memory).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.kube import Kube, Watcher
from bench.precision import bot_body, iso, other_operators, pod_template
from bench.processes import BenchOperator, CpuMeter, cluster_pids, cpu_seconds, rss_bytes
from bench.stats import summary
from bench.trackers import BotTracker

log = logging.getLogger("bench")

WAIT_HOURS = 6
CONCURRENCY = 32
#: After the burst: bots created one at a time at an ordinary pace.
PACED_COUNT = 200
PACED_RATE = 20
SETTLE_AFTER_RESTART = 30


class ScalePhase:
    def __init__(
        self,
        *,
        kube: Kube,
        kubeconfig: Path,
        out: Path,
        run_id: str,
        count: int,
        idle: float,
        deadline: float,
        template: bool = False,
        operator_args: list[str] | None = None,
        operator_env: dict[str, str] | None = None,
        operator_python: str = sys.executable,
        without_webhook: bool = False,
    ) -> None:
        self.kube = kube
        self.without_webhook = without_webhook
        self.cluster_dir = kubeconfig.parent
        self.count = count
        self.idle = idle
        self.deadline = deadline
        self.namespace = f"bench-{run_id}-scale"
        self.operator = BenchOperator(
            kubeconfig=kubeconfig,
            namespaces=[self.namespace],
            log_path=out / "operator-scale.log",
            webhook_config=f"scheduledbot-bench-{self.namespace}",
            args=list(operator_args or []),
            env=dict(operator_env or {}),
            python=operator_python,
        )
        self.bots = BotTracker()
        self.watch = Watcher(kube, kube.bots_path(self.namespace), on_event=self.bots.on_event)
        # By default the bots carry no Pod template (the operator's default applies), as most would.
        self.template = pod_template(f"{run_id}-scale") if template else None

    def _left(self, at_most: float) -> float:
        return max(5.0, min(at_most, self.deadline - time.time()))

    async def run(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "count": self.count,
            "idle_window_s": self.idle,
            "template": self.template is not None,
        }
        await self.kube.create_namespace(self.namespace)
        try:
            self.operator.start(wait=False)
            await self.operator.wait_healthy()
            if self.without_webhook:
                await asyncio.to_thread(self.operator.remove_webhook_configuration)
                result["without_webhook"] = True
            result["rss_empty_mb"] = rss_bytes(self.operator.pid) / 2**20
            result["other_operators"] = other_operators({self.operator.pid})
            self.watch.start()
            await asyncio.wait_for(self.watch.synced.wait(), 30)
            await self._create(result)
            await self._idle(result)
            await self._restart(result)
            # Memory once the restart's initial listing has been digested and kopf's
            # per-object workers have gone idle.
            await asyncio.sleep(SETTLE_AFTER_RESTART)
            result["restart_rss_settled_mb"] = rss_bytes(self.operator.pid) / 2**20
            await self._paced(result)
        finally:
            await self.watch.stop()
            await self.operator.close_async()
            took = await self.kube.delete_namespace(self.namespace, timeout=self._left(600) + 120)
            result["namespace_deleted_s"] = took
        return result

    async def _create(self, result: dict[str, Any]) -> None:
        join_at = iso((datetime.now(UTC) + timedelta(hours=WAIT_HOURS)).replace(microsecond=0).timestamp())
        bodies = [
            bot_body(f"w-{i:05d}", self.namespace, join_at=join_at, lead=300, template=self.template, index=i)
            for i in range(self.count)
        ]
        meter = CpuMeter({"operator": self.operator.pid, "bench": os.getpid(), **cluster_pids(self.cluster_dir)})
        started = time.time()
        returned = await self.kube.create_bots(self.namespace, bodies, concurrency=CONCURRENCY)
        created = time.time()
        ok = await self.watch.wait(lambda: self.bots.count("scheduled") >= self.count, timeout=self._left(300))
        done = time.time()
        result["cpu_during_creation_s"] = meter.used()
        latencies = [self.bots.first_state_at[n] - at for n, at in returned.items() if n in self.bots.first_state_at]
        result.update(
            {
                "create_s": created - started,
                "creates_per_s": self.count / (created - started),
                "all_scheduled_s": done - started,
                "all_scheduled": ok,
                "scheduled": self.bots.count("scheduled"),
                "to_scheduled": summary(latencies),
                "other_states": {k: v for k, v in self.bots.states.items() if k != "scheduled" and v},
            }
        )
        log.info(
            "scale: %d created in %.1f s (%.0f/s); all scheduled %s after %.1f s; creation->scheduled %s",
            self.count,
            created - started,
            self.count / (created - started),
            ok,
            done - started,
            {k: round(v, 3) for k, v in result["to_scheduled"].items()},
        )

    async def _paced(self, result: dict[str, Any]) -> None:
        """Creation -> scheduled when bots come at a steady, ordinary pace, with the N waiting."""
        count, rate = PACED_COUNT, PACED_RATE
        join_at = iso((datetime.now(UTC) + timedelta(hours=WAIT_HOURS)).replace(microsecond=0).timestamp())
        returned: dict[str, float] = {}
        started = time.time()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, started + i / rate - time.time()))
            body = bot_body(
                f"paced-{i:04d}",
                self.namespace,
                join_at=join_at,
                lead=300,
                template=self.template,
                index=self.count + 1 + i,
            )
            returned.update(await self.kube.create_bots(self.namespace, [body], concurrency=1))

        await asyncio.gather(*(one(i) for i in range(count)))
        want = self.count + 1 + count
        await self.watch.wait(lambda: self.bots.count("scheduled") >= want, timeout=self._left(60))
        latencies = [self.bots.first_state_at[n] - at for n, at in returned.items() if n in self.bots.first_state_at]
        result["paced"] = {"count": count, "rate_per_s": rate, "to_scheduled": summary(latencies)}
        log.info(
            "scale: %d more bots at %d/s: creation->scheduled %s",
            count,
            rate,
            {k: round(v, 3) for k, v in result["paced"]["to_scheduled"].items()},
        )

    async def _idle(self, result: dict[str, Any]) -> None:
        # Let the last passes and the watch settle, then measure a quiet window.
        await asyncio.sleep(5)
        pid = self.operator.pid
        metrics = await self.operator.scrape()
        result["gauge_total"] = metrics.total("scheduledbot_bots")
        result["status_writes"] = metrics.get("scheduledbot_status_writes_total")
        result["rss_mb"] = rss_bytes(pid) / 2**20
        cpu_before, at = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(self.idle)
        cpu_after, window = cpu_seconds(pid), time.monotonic() - at
        result["idle_cpu_s_per_min"] = (cpu_after - cpu_before) / window * 60
        result["rss_after_idle_mb"] = rss_bytes(pid) / 2**20
        log.info(
            "scale: RSS %.1f MB (empty %.1f MB); idle CPU %.3f s per minute over %.0f s",
            result["rss_mb"],
            result["rss_empty_mb"],
            result["idle_cpu_s_per_min"],
            window,
        )

    async def _restart(self, result: dict[str, Any]) -> None:
        if os.environ.get("BENCH_PROFILE"):
            self.operator.stop()  # SIGTERM, so that cProfile writes its file; the restart is then graceful
        else:
            self.operator.kill()
        self.operator.start(wait=False)
        spawned = self.operator.started_at
        fresh = "fresh-after-restart"
        join_at = iso((datetime.now(UTC) + timedelta(hours=WAIT_HOURS)).replace(microsecond=0).timestamp())
        await self.kube.create_bots(
            self.namespace,
            [bot_body(fresh, self.namespace, join_at=join_at, lead=300, template=self.template, index=self.count)],
            concurrency=1,
        )
        fresh_created = time.time()
        healthy = await self.operator.wait_healthy(timeout=self._left(120))
        want = self.count + 1
        all_known: float | None = None
        deadline = time.time() + self._left(240)
        while time.time() < deadline:
            metrics = await self.operator.scrape()
            total = metrics.total("scheduledbot_bots")
            if total >= want and all_known is None:
                all_known = time.time()
            if all_known is not None and self.bots.state_of.get(fresh) == "scheduled":
                break
            await asyncio.sleep(0.25)
        fresh_at = self.bots.first_state_at.get(fresh)
        metrics = await self.operator.scrape()
        caught = max(all_known, fresh_at) - spawned if all_known is not None and fresh_at is not None else math.nan
        result.update(
            {
                "restart_healthy_s": healthy,
                "restart_all_known_s": (all_known - spawned) if all_known is not None else math.nan,
                "restart_fresh_scheduled_s": (fresh_at - spawned) if fresh_at is not None else math.nan,
                "restart_fresh_created_s": fresh_created - spawned,
                "restart_caught_up_s": caught,
                "restart_status_writes": metrics.get("scheduledbot_status_writes_total"),
                "restart_cpu_s": cpu_seconds(self.operator.pid),
                "restart_rss_mb": rss_bytes(self.operator.pid) / 2**20,
            }
        )
        log.info(
            "scale: restart caught up after %.1f s (healthy %.1f s, all %d known %.1f s, fresh scheduled %.1f s);"
            " %s status writes",
            caught,
            healthy,
            want,
            result["restart_all_known_s"],
            result["restart_fresh_scheduled_s"],
            result["restart_status_writes"],
        )
