"""One scenario's run on the local cluster: its namespace, operator replicas, bots, faults and records.

A `Run` creates a namespace, starts the operator (one replica, or several on a Lease), and
watches the namespace's Pods and ScheduledBots from its own threads while the scenario creates
bots with `kubectl apply` and does its worst. `finish()` waits until every join that can come
has come, ends the meetings, waits for the bots to settle, and turns what was recorded (the
meeting server's arrivals, the Pods and states watched, the operator logs, /healthz) into a
`ScenarioResult` for chaos.verdicts to judge.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaos.kube import ApiError, Kube, Obj, Watcher, bots_path, pods_path
from chaos.probe import HealthProbe
from chaos.verdicts import IN_MEETING, TERMINAL, BotRecord, ScenarioResult, could_join, count_tracebacks
from localcluster import faults
from localcluster.meeting import MeetingServerProcess
from localcluster.operator import OperatorProcess
from localcluster.testing import Cluster

POD_LABEL = "meetingbots.dev/scheduledbot"
#: Seconds of operator uptime a bot without a Ready Pod needs to be given one and join (a Pod
#: process starts in seconds, more on a loaded machine): less than this between its stageAt and
#: its join deadline, and a missed join is the outage's, not the operator's.
POD_START_ALLOWANCE = 15.0


class NotApplicable(Exception):
    """The scenario cannot run against this operator (say, it has no leader election)."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What every run of one `make chaos` shares."""

    cluster: Cluster
    meeting: MeetingServerProcess
    out_dir: Path
    operator_args: tuple[str, ...] = ()
    #: Extra arguments of each replica in multi-replica scenarios; `{namespace}` is replaced.
    replica_args: str = "--leader-elect --leader-election-namespace {namespace}"
    #: The gauge that is 1 on the replica holding the lease.
    leader_metric: str = "scheduledbot_leader"
    health_limit: float = 2.0


@dataclass
class Plan:
    """What the scenario expects of one bot; updated as it reschedules or deletes it."""

    name: str
    join_at: float
    lead: int
    deadline: int = 20
    expect_join: bool | None = True
    late_limit: float | None = 3.0
    max_pods: int | None = 1
    deleted: bool = False


@dataclass
class _Seen:
    """What the watches recorded of one bot."""

    pod_uids: set[str] = field(default_factory=set)
    first_ready: float | None = None
    states: list[str] = field(default_factory=list)
    status: Obj = field(default_factory=dict)
    gone: bool = False


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sleep_until(epoch: float) -> None:
    left = epoch - time.time()
    if left > 0:
        time.sleep(left)


class Run:
    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower())
        self.namespace = f"chaos-{slug}"[:50].rstrip("-") + "-" + secrets.token_hex(3)
        self.kube = Kube(settings.cluster.kubeconfig)
        self.plans: dict[str, Plan] = {}
        self.operators: list[OperatorProcess] = []
        self.probe = HealthProbe()
        self.notes: list[str] = []
        self._seen: dict[str, _Seen] = {}
        self._changed = threading.Condition()
        self._watchers: list[Watcher] = []
        self._began = time.monotonic()
        #: The operator's outages (killed or frozen, until ready again), single-replica runs.
        self.outages: list[tuple[float, float]] = []
        self._down_since: dict[int, float] = {}

    # --- set-up and tear-down -------------------------------------------------------------

    def open(self, *, replicas: int = 1) -> None:
        cluster = self.settings.cluster
        cluster.kubectl("create", "namespace", self.namespace)
        cluster.wait_for_service_account(self.namespace)
        for path, handler in ((pods_path(self.namespace), self._on_pod), (bots_path(self.namespace), self._on_bot)):
            watcher = Watcher(self.kube, path, handler)
            self._watchers.append(watcher)
            watcher.start()
        self.probe.start()
        extra = self.settings.replica_args.format(namespace=self.namespace).split() if replicas > 1 else []
        for index in range(replicas):
            operator = OperatorProcess(
                kubeconfig=cluster.kubeconfig,
                namespaces=[self.namespace],
                log_path=self.settings.out_dir / self.namespace / f"operator-{index}.log",
                extra_meeting_hosts=[self.settings.meeting.address],
                args=[*self.settings.operator_args, *extra],
                env=cluster.operator_environment(),
                admin_kubeconfig=cluster.kubeconfig,
            )
            self.operators.append(operator)
            self.start(operator, not_applicable_on_exit=bool(extra))

    def close(self) -> None:
        """Stop what `open` started, as far as it got, and leave nothing behind.

        The bots go first, while an operator still runs to release them (their finalizer);
        what is left once the operators are stopped is released by hand, or the namespace
        would stay Terminating.
        """
        self.probe.stop()
        kubectl = self.settings.cluster.kubectl
        try:
            if any(operator.alive() for operator in self.operators):
                kubectl("delete", "scheduledbots", "--all", "-n", self.namespace, "--timeout=20s", check=False)
            for operator in self.operators:
                operator.close()
        finally:
            for watcher in self._watchers:
                watcher.stop()
            left = kubectl("get", "scheduledbots", "-n", self.namespace, "-o", "name", check=False).stdout.split()
            for name in left:
                patch = '{"metadata":{"finalizers":null}}'
                kubectl("patch", name, "-n", self.namespace, "--type=merge", "-p", patch, check=False)
            kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)

    # --- the operator -----------------------------------------------------------------------

    def start(self, operator: OperatorProcess, *, not_applicable_on_exit: bool = False) -> None:
        try:
            operator.start()
        except RuntimeError as error:
            if not_applicable_on_exit and "unrecognized arguments" in str(error):
                raise NotApplicable(
                    f"the operator does not accept the replica arguments {self.settings.replica_args!r}"
                ) from None
            raise
        self._up(operator)

    def kill(self, operator: OperatorProcess) -> None:
        self._down(operator)
        operator.kill()

    def pause_operator(self, operator: OperatorProcess) -> None:
        self._down(operator)
        operator.pause()

    def resume_operator(self, operator: OperatorProcess) -> None:
        operator.resume()
        self._up(operator)

    def _down(self, operator: OperatorProcess) -> None:
        self.probe.down(operator)
        self._down_since[id(operator)] = time.time()

    def _up(self, operator: OperatorProcess) -> None:
        down = self._down_since.pop(id(operator), None)
        if down is not None and len(self.operators) == 1:
            self.outages.append((down, time.time()))
        self.probe.up(operator)

    def leader(self, timeout: float = 30) -> OperatorProcess:
        """The replica whose leader gauge reads 1; NotApplicable when no replica exports it."""
        metric = self.settings.leader_metric
        deadline = time.monotonic() + timeout
        exported = False
        while time.monotonic() < deadline:
            for operator in self.operators:
                if not operator.alive():
                    continue
                try:
                    value = operator.metrics(timeout=2).get(metric)
                except OSError:
                    continue
                exported = exported or value is not None
                if value == 1:
                    return operator
            time.sleep(0.2)
        if not exported:
            raise NotApplicable(f"no replica exports the leader gauge {metric!r}")
        raise RuntimeError(f"no replica became leader ({metric} = 1) within {timeout:g} s")

    # --- bots -------------------------------------------------------------------------------

    def create(self, plans: Iterable[Plan], **spec: Any) -> None:
        """All the bots in one `kubectl apply`, as a user applies a file; each in a meeting of its own."""
        items = []
        for plan in plans:
            self.plans[plan.name] = plan
            self._seen.setdefault(plan.name, _Seen())
            body = {
                "meetingUrl": self.settings.meeting.meeting_url(self.meeting_id(plan.name)),
                "botName": f"Chaos {plan.name}",
                "joinAt": iso(plan.join_at),
                "stagingLeadSeconds": plan.lead,
                "joinDeadlineSeconds": plan.deadline,
                **spec,
            }
            items.append(
                {
                    "apiVersion": "meetingbots.dev/v1alpha1",
                    "kind": "ScheduledBot",
                    "metadata": {"name": plan.name, "namespace": self.namespace},
                    "spec": body,
                }
            )
        # A few kubectl processes side by side: each create passes the admission webhook, and
        # thirty in a row take long enough on a loaded machine to eat into the first lead.
        chunks = [items[index : index + 8] for index in range(0, len(items), 8)]
        failures: list[BaseException] = []

        def apply(chunk: list[Obj]) -> None:
            try:
                self.settings.cluster.kubectl(
                    "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": chunk})
                )
            except Exception as error:
                failures.append(error)

        began = time.time()
        threads = [threading.Thread(target=apply, args=(chunk,)) for chunk in chunks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        took = time.time() - began
        first_stage = min(plan.join_at - plan.lead for plan in self.plans.values())
        if time.time() > first_stage:
            self.notes.append(f"creating the bots took {took:.1f} s, past the first stageAt")

    def meeting_id(self, name: str) -> str:
        return f"{self.namespace}-{name}"

    def reschedule(self, name: str, join_at: float) -> bool:
        """Patch spec.joinAt (a user's client, not kubectl: storms need many a second).

        False, with a note, when the API server refuses because the bot has started joining
        (a storm slower than the bot's joinAt on a loaded machine): its last joinAt stands.
        """
        try:
            self.kube.patch(bots_path(self.namespace, name), {"spec": {"joinAt": iso(join_at)}})
        except ApiError as error:
            if error.status != 422 or "started joining" not in str(error):
                raise
            self.notes.append(f"{name}: reschedule refused, it had started joining at its joinAt")
            return False
        self.plans[name].join_at = join_at
        return True

    def delete_at(self, names: Sequence[str], instant: float) -> None:
        """DELETE each bot at `instant`, on connections opened beforehand, so the requests leave on time."""
        connections = {name: self.kube.connection() for name in names}
        errors: list[BaseException] = []

        def send(name: str) -> None:
            sleep_until(instant)
            try:
                self.kube.call("DELETE", bots_path(self.namespace, name), connection=connections[name])
            except Exception as error:
                errors.append(error)
            finally:
                connections[name].close()

        threads = [threading.Thread(target=send, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name in names:
            self.plans[name].deleted = True
        if errors:
            raise RuntimeError(f"deleting at the instant failed: {errors[0]}")

    def delete_pod(self, name: str) -> None:
        self.kube.call("DELETE", pods_path(self.namespace, f"{name}-bot"))

    def kill_pod_process(self, name: str) -> None:
        faults.kill_pod_process(self.namespace, f"{name}-bot", self.settings.cluster.layout)

    def state(self, name: str) -> str | None:
        with self._changed:
            return self._seen[name].status.get("state")

    def pod_ready(self, name: str) -> bool:
        with self._changed:
            return self._seen[name].first_ready is not None

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        """Until `predicate()` holds after a watched change; TimeoutError naming `what` otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name}: not {what} within {timeout:g} s")
                self._changed.wait(left)

    # --- watch handlers ---------------------------------------------------------------------

    def _on_pod(self, kind: str, pod: Obj, seen_at: float) -> None:
        labels = pod["metadata"].get("labels") or {}
        bot = labels.get(POD_LABEL) or pod["metadata"]["name"].removesuffix("-bot")
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )
        with self._changed:
            seen = self._seen.setdefault(bot, _Seen())
            seen.pod_uids.add(pod["metadata"]["uid"])
            if ready and kind != "DELETED" and seen.first_ready is None:
                seen.first_ready = seen_at
            self._changed.notify_all()

    def _on_bot(self, kind: str, bot: Obj, seen_at: float) -> None:
        with self._changed:
            seen = self._seen.setdefault(bot["metadata"]["name"], _Seen())
            if kind == "DELETED":
                seen.gone = True
            else:
                seen.status = bot.get("status") or {}
                state = seen.status.get("state")
                if state and (not seen.states or seen.states[-1] != state):
                    seen.states.append(state)
            self._changed.notify_all()

    # --- the end ------------------------------------------------------------------------------

    def finish(self, *, settle: float = 5.0, timeout: float = 25.0) -> ScenarioResult:
        """Wait for every join that can still come, end the meetings, wait for the bots to settle.

        A bot's join can come until its join deadline: the meetings are ended once every bot
        not deleted is in the meeting or done by its status, or its deadline has passed, and
        at least `settle` seconds after the last joinAt; then the run's records.
        """
        sleep_until(max((plan.join_at for plan in self.plans.values()), default=0) + settle)
        live = [name for name, plan in self.plans.items() if not plan.deleted]

        def joined_or_due() -> bool:
            now = time.time()
            return all(
                self._seen[n].status.get("state") in IN_MEETING | TERMINAL
                or now > self.plans[n].join_at + self.plans[n].deadline + 1
                for n in live
            )

        last_deadline = max((self.plans[n].join_at + self.plans[n].deadline + 1 for n in live), default=0)
        try:
            self.wait("joined or past its deadline, every bot", joined_or_due, max(0, last_deadline - time.time()))
        except TimeoutError:
            pass  # the deadlines passed: what has not joined by now has missed
        time.sleep(1)  # the recording delay: a bot just joined reaches the meeting's end in a state of its own
        for name in live:
            self._admin(self.meeting_id(name), "")  # so that a later arrival is refused, not recorded
            self._admin(self.meeting_id(name), "/end")

        def settled() -> bool:
            return all(self._seen[n].status.get("state") in TERMINAL for n in live) and all(
                self._seen[n].gone for n, plan in self.plans.items() if plan.deleted
            )

        try:
            self.wait("settled (every bot ended or failed, every deleted bot gone)", settled, timeout)
        except TimeoutError as error:
            self.notes.append(str(error))
        if any(plan.deleted for plan in self.plans.values()):
            time.sleep(2)  # a bot that was told to leave as it was deleted: its departure lands
        return self.result()

    def result(self) -> ScenarioResult:
        records = []
        with self._changed:
            for name, plan in self.plans.items():
                seen = self._seen[name]
                ready_before_join = seen.first_ready is not None and seen.first_ready < plan.join_at
                expect_join = plan.expect_join
                if expect_join and not could_join(
                    stage_at=plan.join_at - plan.lead,
                    deadline_at=plan.join_at + plan.deadline,
                    ready_before_join=ready_before_join,
                    outages=self.outages,
                    allowance=POD_START_ALLOWANCE,
                ):
                    expect_join = None  # the operator was never up long enough to give it a Pod
                    self.notes.append(f"{name}: no chance to join (operator down through its window)")
                meeting = self._meeting(self.meeting_id(name))
                status = {} if seen.gone else seen.status
                records.append(
                    BotRecord(
                        name=name,
                        join_at=plan.join_at,
                        expect_join=expect_join,
                        late_limit=plan.late_limit,
                        max_pods=plan.max_pods,
                        arrivals=tuple(a["timestamp"] for a in meeting.get("arrivals", [])),
                        present_at_end=any(
                            p["status"] in ("admitted", "waiting") for p in meeting.get("participants", [])
                        ),
                        meeting_ended=not plan.deleted,
                        pods=len(seen.pod_uids),
                        ready_before_join=ready_before_join,
                        deleted=plan.deleted,
                        state=status.get("state"),
                        reason=status.get("reason"),
                        joined_at=status.get("joinedAt"),
                        joined_by=status.get("joinedBy"),
                        lateness_ms=status.get("joinLatenessMs"),
                        states=tuple(seen.states),
                    )
                )
        total = 0
        exceptions: tuple[str, ...] = ()
        for operator in self.operators:
            count, found = count_tracebacks(operator.log(None))
            total, exceptions = total + count, exceptions + found
        return ScenarioResult(
            name=self.name,
            bots=tuple(records),
            tracebacks=total,
            exceptions=exceptions,
            health=tuple(self.probe.samples),
            health_limit=self.settings.health_limit,
            seconds=time.monotonic() - self._began,
            notes=tuple(self.notes),
        )

    def _meeting(self, meeting_id: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(
                f"{self.settings.meeting.base_url}/admin/meetings/{meeting_id}", timeout=5
            ) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return {}
            raise

    def _admin(self, meeting_id: str, action: str) -> None:
        request = urllib.request.Request(
            f"{self.settings.meeting.base_url}/admin/meetings/{meeting_id}{action}",
            data=b"{}",
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
