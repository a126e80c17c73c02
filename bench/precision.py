"""Join precision under a thundering herd, the naive baseline beside it, and the API cost of a lifecycle.

One run of N bots:
1. create N ScheduledBots sharing one `joinAt` (a whole second), with a staging lead
   longer than the time to `joinAt`, so that every bot is staged at once;
2. wait until every bot Pod is Ready (the stub answers the probe); the time left
   until `joinAt` is the run's idle margin, reported;
3. at `joinAt` the operator signals them all; the stub stamps each join as it arrives;
   the operator's own record is `status.joinSignaledAt` (millisecond resolution) and
   its lateness histogram (`_sum`/`_count` give the mean at full resolution);
4. the naive baseline (bench/naive.py, its own process) joins the same N stub
   addresses a few seconds later; the stub stamps those too;
5. the stub reports `joined`, then `ended`, for every bot; the operator follows; the
   API server's request counters before step 1 and after the last `ended` give the
   writes of a whole lifecycle;
6. the bots are deleted (their Pods go with them) and the stub's bots reset.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.identity import CATEGORIES, OperatorIdentity
from bench.kube import GROUP, Kube, Watcher
from bench.pods import sleeping_bot
from bench.processes import ROOT, BenchOperator, CpuMeter, StubProcess, cluster_pids, run_naive
from bench.stats import summary
from bench.trackers import BotTracker, PodTracker
from localcluster.operator import Metrics

log = logging.getLogger("bench")

STUB_PORT = 18181
#: The bench Pods' readiness probe runs this long after their process starts.
PROBE_DELAY = 5
#: Headroom of pre-bound stub addresses over the largest run: other clusters' and
#: tests' Pods take addresses of the same pool.
ADDRESS_MARGIN = 300
JOINED_OR_LATER = ("joining", "waiting_room", "joined", "recording", "leaving", "ended")
TRANSITIONS = ("scheduled", "staged", "joining", "joined", "ended")
BOT_LABEL = "meetingbots.dev/scheduledbot"
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def pod_template(run: str, port: int = STUB_PORT) -> dict[str, Any]:
    """`sleep 3600` as the bot process; the stub plays its control API on the same address."""
    # One probe when the process starts, then none for an hour: no probe traffic at the join
    # instant. A failed first probe would leave the Pod unready for that hour: the delay gives
    # the harness time to bind an address that was not pre-bound, and the timeout is generous
    # for a stub answering thousands at once.
    probe = {"initialDelaySeconds": PROBE_DELAY, "timeoutSeconds": 10, "periodSeconds": 3600, "failureThreshold": 1}
    return sleeping_bot(run, port=port, grace=2, sleep=3600, probe=probe)


def bot_body(
    name: str, namespace: str, *, join_at: str, lead: int | None, template: dict[str, Any] | None, index: int
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "meetingUrl": f"https://zoom.us/j/{9000000000 + index}",
        "botName": f"Bench {name}",
        "joinAt": join_at,
    }
    if lead is not None:
        spec["stagingLeadSeconds"] = lead
    if template is not None:
        spec["template"] = template
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "ScheduledBot",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


@dataclass
class RunResult:
    size: int
    index: int
    join_at: float
    created_s: float
    staged_s: float
    idle_margin_s: float
    not_ready: int
    bot: list[float] = field(default_factory=list)  # stub read stamp - joinAt, seconds
    bot_kernel: list[float] = field(default_factory=list)  # kernel receive stamp (SO_TIMESTAMPNS) - joinAt
    operator: list[float] = field(default_factory=list)  # joinSignaledAt - joinAt (1 ms resolution)
    operator_mean: float = math.nan  # histogram _sum/_count: full resolution
    operator_buckets: dict[str, float] = field(default_factory=dict)
    naive: list[float] = field(default_factory=list)  # stub read stamp - naive joinAt
    naive_kernel: list[float] = field(default_factory=list)  # kernel receive stamp - naive joinAt
    naive_woke: list[float] = field(default_factory=list)  # naive task woke - naive joinAt
    naive_note: str = ""
    missing_bot: int = 0
    missing_naive: int = 0
    api: dict[str, float] = field(default_factory=dict)  # writes per bot, apiserver_request_total (all clients)
    apf: dict[str, float] = field(default_factory=dict)  # requests per bot of our operator only (FlowSchemas)
    watched: dict[str, float] = field(default_factory=dict)  # writes per bot seen on our watch
    events: dict[str, int] = field(default_factory=dict)
    lifecycle_ok: bool = True
    other_operators: int = 0
    published_s: float = math.nan  # joinAt -> every bot shows `joining` (or later)
    failed: int = 0  # bots `failed` at the end of the lifecycle (Missed, NotReadyInTime...)
    ahead_s: float = math.nan  # first create -> joinAt
    default_lead: bool = False  # created ahead with the default lead: the operator chose when to stage
    loop_lag: dict[str, float] = field(default_factory=dict)  # event-loop lag at the instant, s (metric)
    #: CPU seconds of each process from joinAt until every status shows `joining` (or the wait's end).
    cpu_publishing: dict[str, float] = field(default_factory=dict)

    def brief(self) -> dict[str, Any]:
        return {"bot": summary(self.bot), "operator": summary(self.operator), "naive": summary(self.naive)}


class PrecisionPhase:
    def __init__(
        self,
        *,
        kube: Kube,
        kubeconfig: Path,
        out: Path,
        run_id: str,
        sizes: list[int],
        runs: dict[int, int],
        deadline: float,
        operator_args: list[str] | None = None,
        stub_port: int = STUB_PORT,
        lead_base: float = 10.0,
        namespace_timeout: float = 180,
        floor_samples: int = 30,
        name: str = "join",
        operator_env: dict[str, str] | None = None,
        operator_python: str = sys.executable,
        ahead: float | None = None,
        ahead_min_size: int = 0,
    ) -> None:
        self.kube = kube
        self.kubeconfig = kubeconfig
        self.out = out
        self.run_id = run_id
        self.sizes = sizes
        self.runs = runs
        self.deadline = deadline
        self.namespace = f"bench-{run_id}-{name}"
        #: Create the bots this long before joinAt, with the default staging lead (runs of at
        #: least `ahead_min_size` bots): the operator, not the harness, decides when to stage.
        self.ahead = ahead
        self.ahead_min_size = ahead_min_size
        self.port = stub_port
        self.lead_base = lead_base
        self.namespace_timeout = namespace_timeout
        self.floor_samples = floor_samples
        self.stub = StubProcess(port=stub_port, count=int(max(sizes) * 1.1) + ADDRESS_MARGIN, log_path=out / "stub.log")
        self.identity = OperatorIdentity(
            kube,
            namespace=self.namespace,
            run_id=f"{run_id}{name}",
            admin_kubeconfig=kubeconfig,
            path=out / f"operator-{name}.kubeconfig",
        )
        self.operator = BenchOperator(
            kubeconfig=out / f"operator-{name}.kubeconfig",
            namespaces=[self.namespace],
            log_path=out / f"operator-{name}.log",
            env=dict(operator_env or {}),
            python=operator_python,
            webhook_config=f"scheduledbot-bench-{self.namespace}",
            args=list(operator_args or []),
            admin_kubeconfig=kubeconfig,
        )
        self.bots = BotTracker()
        self.pods = PodTracker()
        self.bot_watch = Watcher(kube, kube.bots_path(self.namespace), on_event=self.bots.on_event)
        self.pod_watch = Watcher(
            kube,
            f"/api/v1/namespaces/{self.namespace}/pods",
            label_selector=BOT_LABEL,
            on_event=self.pods.on_event,
        )
        #: Seconds of creating + staging per bot, learned from each run (first guess: conservative,
        #: for a loaded machine: a bot created after its joinAt is refused).
        self.per_bot = 0.08
        #: Runs that failed, with their error.
        self.errors: list[str] = []
        self.results: list[RunResult] = []
        #: Measurement floor samples (seconds; "read" and "kernel"), before the first run and after the last.
        self.floor: list[dict[str, list[float]]] = []
        self._binder: asyncio.Task[None] | None = None
        self.others: OtherOperators | None = None

    async def run(self) -> list[RunResult]:
        await self.kube.create_namespace(self.namespace)
        try:
            await self.identity.create()
            hello = await self.stub.start()
            log.info(
                "stub: %d addresses bound on port %d (open files limit %d)", hello["bound"], self.port, hello["nofile"]
            )
            self.operator.start(wait=False)
            await self.operator.wait_healthy()
            self.bot_watch.start()
            self.pod_watch.start()
            await asyncio.wait_for(asyncio.gather(self.bot_watch.synced.wait(), self.pod_watch.synced.wait()), 30)
            self._binder = asyncio.ensure_future(self._bind_new_addresses())
            self.others = OtherOperators({self.operator.pid})
            self.others.start()
            self.floor.append(await self._floor())
            for size in self.sizes:
                for index in range(self.runs[size]):
                    # Staging, then the join, the naive round, the lifecycle and the clean-up.
                    if time.time() + self._ahead(size) + 30 + size * 0.1 > self.deadline:
                        log.warning("time budget: skipping the remaining runs of %d bots", size)
                        break
                    try:
                        result = await self._one(size, index)
                    except Exception as error:  # one broken run (API timeouts, say) does not end the phase
                        log.exception("run %d bots #%d failed", size, index + 1)
                        self.errors.append(f"{size:,} bots #{index + 1}: {type(error).__name__}: {error}"[:400])
                        await self._clean_up_after_failure()
                        continue
                    self.results.append(result)
                    log.info("run %d bots #%d: %s", size, index + 1, _line(result))
            self.floor.append(await self._floor())
        finally:
            await self._cleanup()
        return self.results

    async def _floor(self) -> dict[str, list[float]]:
        """Arrival - send of on-time pings from another process (bench/floor.py)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.floor",
            "--address",
            f"127.0.0.10:{self.port}",
            "--count",
            str(self.floor_samples),
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        sent = dict(json.loads(out)["sent"])
        arrived = {
            rid: (at, kernel) for _, at, rid, kernel in (await self.stub.command("joins"))["joins"] if rid in sent
        }
        read = [arrived[rid][0] - t for rid, t in sent.items() if rid in arrived]
        kernel = [k - t for rid, t in sent.items() if rid in arrived and (k := arrived[rid][1]) is not None]
        log.info(
            "measurement floor: read %s ms; kernel %s ms",
            {k: round(v * 1000, 3) for k, v in summary(read).items() if k != "n"},
            {k: round(v * 1000, 3) for k, v in summary(kernel).items() if k != "n"},
        )
        return {"read": read, "kernel": kernel}

    def _estimate(self, size: int) -> float:
        """Seconds from now to a joinAt by which all `size` bots are staged, Ready, and idle."""
        return PROBE_DELAY + self.lead_base + 1.5 * self.per_bot * size

    def _ahead(self, size: int) -> float:
        """How long before joinAt this run's bots are created."""
        if self.ahead is not None and size >= self.ahead_min_size:
            return max(self.ahead, self._estimate(size))
        return self._estimate(size)

    async def _bind_new_addresses(self) -> None:
        """Bind the stub on any address the kubelet gave a bench Pod beyond the pre-bound ones."""
        while True:
            await asyncio.sleep(0.2)
            if self.pods.new_addresses:
                wanted, self.pods.new_addresses = self.pods.new_addresses, []
                reply = await self.stub.command("bind", addresses=wanted)
                if reply["failed"]:
                    log.warning("stub could not bind %s", reply["failed"])

    async def _one(self, size: int, index: int) -> RunResult:
        prefix = f"s{size}r{index}"
        ahead = self._ahead(size)
        # Created well ahead, the bots keep the default lead and the operator stages them;
        # otherwise their lead covers the whole wait and they are staged at once.
        default_lead = self.ahead is not None and size >= self.ahead_min_size
        join_at = float(math.ceil(time.time() + ahead))
        template = pod_template(f"{self.run_id}-{prefix}", self.port)
        bodies = [
            bot_body(
                f"{prefix}-{i:05d}",
                self.namespace,
                join_at=iso(join_at),
                lead=None if default_lead else int(ahead) + 60,
                template=template,
                index=i,
            )
            for i in range(size)
        ]
        api_before = await self.kube.request_counts()
        apf_before = await self.identity.counts()
        op_before = await self.operator.scrape()
        writes_before = Counter(self.bots.writes)
        assert self.others is not None  # started by run()
        self.others.take()

        started = time.time()
        await self.kube.create_bots(self.namespace, bodies, concurrency=min(32, size))
        created = time.time()
        await self.pod_watch.wait(lambda: len(self.pods.ready) >= size, timeout=max(0.0, join_at - 1 - time.time()))
        staged = time.time()
        not_ready = size - len(self.pods.ready)
        if not_ready == 0 and size >= 500:  # smaller runs are mostly fixed costs
            self.per_bot = max(0.01, (staged - started) / size)
        # The joins are out within milliseconds; publishing `joining` takes the operator a few
        # API writes per bot, at the API server's pace. Who used the CPU meanwhile is measured
        # from joinAt (the 2 cores are shared by the API server, etcd, the operator, this
        # harness and the stub).
        # (A bot that failed instead, Missed say, is counted apart: the wait is for every bot to settle,
        # and a Missed bot fails at its join deadline, 120 s after joinAt by default.)
        await asyncio.sleep(max(0.0, join_at - time.time()))
        meter = CpuMeter(
            {
                "operator": self.operator.pid,
                "stub": self.stub.pid,
                "bench": os.getpid(),
                **cluster_pids(self.kubeconfig.parent),
            }
        )
        ok = await self.bot_watch.wait(
            lambda: self.bots.count(*JOINED_OR_LATER, "failed") >= size,
            timeout=join_at + 130 + size / 25 - time.time(),
        )
        result_published = time.time() - join_at
        cpu_publishing = meter.used()
        if not ok:
            log.warning(
                "only %d of %d bots joining %.0f s after joinAt",
                self.bots.count(*JOINED_OR_LATER),
                size,
                result_published,
            )
        result = RunResult(
            size=size,
            index=index,
            join_at=join_at,
            created_s=created - started,
            staged_s=staged - started,
            idle_margin_s=join_at - staged,
            not_ready=not_ready,
            other_operators=0,
            published_s=result_published if ok else math.nan,
            ahead_s=join_at - started,
            default_lead=default_lead,
            cpu_publishing=cpu_publishing,
        )

        # Ours: at the bot (the stub's stamps) and at the operator (status; histogram).
        addresses = {ip: pod for pod, ip in self.pods.ip_of.items()}
        joins = (await self.stub.command("joins"))["joins"]
        first: dict[str, tuple[float, float | None]] = {}
        for address, at, request_id, kernel in joins:
            if address in addresses and request_id and not request_id.startswith("naive-"):
                first.setdefault(address, (at, kernel))
        result.bot = [first[a][0] - join_at for a in addresses if a in first]
        result.bot_kernel = [k - join_at for a in addresses if a in first and (k := first[a][1]) is not None]
        result.missing_bot = size - len(result.bot)
        for name, obj in self.bot_watch.objects.items():
            signaled = (obj.get("status") or {}).get("joinSignaledAt")
            if name.startswith(prefix) and signaled:
                result.operator.append(parse_time(signaled) - join_at)
        op_after = await self.operator.scrape()
        result.operator_mean, result.operator_buckets = _histogram_delta(op_before, op_after)
        for loop in ("dispatcher", "operator"):
            lag = op_after.get("scheduledbot_event_loop_lag_last_seconds", loop=loop)
            result.loop_lag[loop] = math.nan if lag is None else lag

        # The naive fan-out on the same addresses.
        targets = sorted(f"{ip}:{self.port}" for ip in addresses)
        naive_at = float(math.ceil(time.time() + 3 + size / 400))
        try:
            report = await run_naive(targets, join_at=naive_at, workdir=self.out, timeout=60 + size / 50)
            if report["ready"].get("late_start"):
                result.naive_note = "naive baseline was not warm before its joinAt"
            result.naive_woke = [r["woke"] - naive_at for r in report["results"]]
            errors = [r for r in report["results"] if "error" in r]
            if errors:
                result.naive_note += f" {len(errors)} naive joins failed: {errors[0]['error']}"
        except RuntimeError as error:
            result.naive_note = str(error)[:500]
        naive_first: dict[str, tuple[float, float | None]] = {}
        for address, at, request_id, kernel in (await self.stub.command("joins"))["joins"]:
            if address in addresses and request_id and request_id.startswith("naive-"):
                naive_first.setdefault(address, (at, kernel))
        result.naive = [naive_first[a][0] - naive_at for a in addresses if a in naive_first]
        result.naive_kernel = [
            k - naive_at for a in addresses if a in naive_first and (k := naive_first[a][1]) is not None
        ]
        result.missing_naive = size - len(result.naive)

        # The rest of the lifecycle: the bots report joined, then ended.
        ips = list(addresses)
        # (Only the bots that joined: one whose Pod never became Ready has failed already.)
        joined = (
            await self.stub.command(
                "state", addresses=ips, state="joined", message="in the meeting", **_moved_from("joining")
            )
        )["moved"]
        ok_joined = await self.bot_watch.wait(lambda: self.bots.count("joined") >= joined, timeout=60 + size / 20)
        ended = (
            await self.stub.command(
                "state",
                addresses=ips,
                state="ended",
                message="the meeting ended",
                reason="MeetingEnded",
                **_moved_from("joined"),
            )
        )["moved"]
        ok_ended = await self.bot_watch.wait(
            lambda: self.bots.count("ended") >= ended and self.bots.with_finalizer == 0, timeout=60 + size / 20
        )
        result.lifecycle_ok = ok_joined and ok_ended and joined == ended == size
        result.failed = self.bots.count("failed")
        if not result.lifecycle_ok:
            log.warning("lifecycle incomplete: %s, %d with finalizer", dict(self.bots.states), self.bots.with_finalizer)
        await asyncio.sleep(0.5)  # let the last requests be counted
        api_after = await self.kube.request_counts()
        apf = await self.identity.counts()
        apf.subtract(apf_before)
        result.apf = {k: apf.get(k, 0) / size for k in CATEGORIES}
        result.api = _api_per_bot(api_before, api_after, size)
        result.other_operators = self.others.take()
        writes = Counter(self.bots.writes)
        writes.subtract(writes_before)
        result.watched = {k: v / size for k, v in writes.items()}
        events = await self.kube.list(f"/api/v1/namespaces/{self.namespace}/events")
        result.events = dict(
            Counter(
                e.get("reason", "?")
                for e in events
                if (e.get("involvedObject") or {}).get("name", "").startswith(prefix)
                and (e.get("source") or {}).get("component") == "scheduledbot-operator"
            )
        )

        await self._clean_up()
        return result

    async def _clean_up_after_failure(self) -> None:
        try:
            await self._clean_up()
        except Exception:
            log.exception("clean-up after a failed run failed too")

    async def _clean_up(self) -> None:
        """Delete this run's bots, Pods and Secrets, for the next run; the addresses come back.

        The garbage collector would delete the children at its client's 20 requests per
        second; the bench deletes them itself, in bounded batches (Kube.delete_each).
        """
        await self.kube.delete_each(self.kube.bots_path(self.namespace), sorted(self.bot_watch.objects))
        await self.kube.delete_each(f"/api/v1/namespaces/{self.namespace}/pods", sorted(self.pod_watch.objects))
        secrets = f"/api/v1/namespaces/{self.namespace}/secrets"
        await self.kube.delete_each(secrets, await self.kube.names(secrets, label_selector=BOT_LABEL))
        size = max(1, len(self.pods.ip_of))
        gone = await self.pod_watch.wait(lambda: not self.pods.ip_of, timeout=120 + size / 20)
        await self.bot_watch.wait(lambda: not self.bot_watch.objects, timeout=60 + size / 50)
        if not gone:
            log.warning("%d bench Pods still there after their bots were deleted", len(self.pods.ip_of))
        await self.stub.command("reset")

    async def _cleanup(self) -> None:
        if self._binder is not None:
            self._binder.cancel()
        if self.others is not None:
            self.others.stop()
        await self.bot_watch.stop()
        await self.pod_watch.stop()
        await self.operator.close_async()
        await self.stub.stop()
        took = await self.kube.delete_namespace(self.namespace, timeout=self.namespace_timeout)
        if took is None:
            log.warning("namespace %s not gone after %.0f s", self.namespace, self.namespace_timeout)
        await self.identity.delete()


class OtherOperators:
    """Samples, every second, the other scheduledbot operators running on this machine."""

    def __init__(self, ours: set[int]) -> None:
        self.ours = ours
        self.seen: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self.seen |= operator_pids() - self.ours
            await asyncio.sleep(1)

    def take(self) -> int:
        """Distinct others seen since the last take (and running now)."""
        count = len(self.seen | (operator_pids() - self.ours))
        self.seen = set()
        return count

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def other_operators(ours: set[int]) -> int:
    return len(operator_pids() - ours)


def operator_pids() -> set[int]:
    """Scheduledbot operators on this machine: their writes share the API server's counters."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"scheduledbot.runtime.main" in cmdline or b"bin/scheduledbot-operator" in cmdline:
            pids.add(int(entry.name))
    return pids


def _moved_from(*states: str) -> dict[str, Any]:
    """The stub's `from` argument (a Python keyword): only bots in these states move."""
    return {"from": list(states)}


def _histogram_delta(before: Metrics, after: Metrics) -> tuple[float, dict[str, float]]:
    name = "scheduledbot_join_lateness_seconds"
    count = (after.get(f"{name}_count") or 0) - (before.get(f"{name}_count") or 0)
    total = (after.get(f"{name}_sum") or 0) - (before.get(f"{name}_sum") or 0)
    earlier = before.series(f"{name}_bucket")
    buckets = {
        dict(labels)["le"]: value - earlier.get(labels, 0) for labels, value in after.series(f"{name}_bucket").items()
    }
    return (total / count if count else math.nan), buckets


def _api_per_bot(
    before: Counter[tuple[str, str, str, str]], after: Counter[tuple[str, str, str, str]], size: int
) -> dict[str, float]:
    delta = Counter(after)
    delta.subtract(before)

    def writes(group: str, resource: str, subresource: str = "", verbs: tuple[str, ...] = WRITE_VERBS) -> float:
        return sum(delta[(v, group, resource, subresource)] for v in verbs) / size

    return {
        "status": writes(GROUP, "scheduledbots", "status"),
        "other": writes(GROUP, "scheduledbots", verbs=("PUT", "PATCH", "APPLY")),
        "events": writes("", "events") + writes("events.k8s.io", "events"),
        "created_by_bench": writes(GROUP, "scheduledbots", verbs=("POST",)),
        "pods_created": writes("", "pods", verbs=("POST",)),
        "secrets_created": writes("", "secrets", verbs=("POST",)),
    }


def _line(r: RunResult) -> str:
    b = r.brief()
    return (
        f"bot p50 {b['bot']['p50'] * 1000:.2f} p99 {b['bot']['p99'] * 1000:.2f} max {b['bot']['max'] * 1000:.2f} ms; "
        f"naive p50 {b['naive']['p50'] * 1000:.2f} p99 {b['naive']['p99'] * 1000:.2f} ms; "
        f"staged in {r.staged_s:.1f} s, idle margin {r.idle_margin_s:.1f} s, missing {r.missing_bot}; "
        f"api/bot {r.api}; ours (APF) {r.apf}; watched {r.watched}; events {r.events}"
    )
