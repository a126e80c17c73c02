"""Recording fakes of the engine's ports, for fast scenarios on looptime's fake loop time.

- `LoopClock`: the runtime's `Clock` whose time is the event loop's (looptime fakes it).
- `FakeCluster`: the few API calls the engine makes, over an in-memory store that
  bumps resourceVersions and delivers watch events back to the engine, as the API
  server and kopf's watch would, a loop iteration later.
- `FakeBots`: bot Pods' control ports: the state long-poll, leave, schedule, and the
  join line; a bot accepts at most one join, as the bot protocol says.

Nothing here sleeps on the wall clock: the scenarios advance looptime's clock.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduledbot.adapters.bots import BotUnreachable, parse_report
from scheduledbot.adapters.kube import ApiError
from scheduledbot.core import children
from scheduledbot.core.model import BotReport, Defaults
from scheduledbot.runtime.clock import loop_call_at
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.engine import Engine, in_loop_dispatcher
from scheduledbot.runtime.metrics import Metrics
from scheduledbot.timestamps import format_time

#: Where every scenario's clock starts (loop time 0).
ORIGIN = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NAMESPACE = "team"


class LoopClock:
    """Epoch time = ORIGIN + the running loop's time: looptime's fake time becomes the wall clock."""

    def __init__(self, origin: datetime = ORIGIN) -> None:
        self._origin = origin.timestamp()

    def time(self) -> float:
        return self._origin + asyncio.get_running_loop().time()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def call_at(self, when: datetime | float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle:
        return loop_call_at(self, when, callback, *args)


def settings(
    defaults: Defaults | None = None,
    *,
    template: dict[str, Any] | None = None,
    token_key: bytes | None = None,
    **overrides: Any,
) -> Settings:
    """The operator's settings for unit tests: no webhook, no ports; `overrides` set other fields by name."""
    base = Settings(
        namespaces=(),
        defaults=defaults or Defaults(),
        template=template or {"spec": {"containers": [{"name": "bot", "image": "bot:1"}]}},
        extra_meeting_hosts=frozenset(),
        self_join_delay_seconds=2,
        log_level="INFO",
        log_format="text",
        health_port=0,
        metrics_port=0,
        webhook=False,
        webhook_listen="",
        webhook_port=0,
        webhook_host="",
        webhook_service=None,
        webhook_config_name="",
        webhook_cert_dir=None,
    )
    if token_key is not None:
        overrides["token_key"] = token_key
    return dataclasses.replace(base, **overrides) if overrides else base


def bot_body(
    name: str,
    *,
    join_at: datetime,
    created_at: datetime,
    uid: str | None = None,
    lead: int = 20,
    deadline: int = 60,
) -> dict[str, Any]:
    return {
        "apiVersion": "meetingbots.dev/v1alpha1",
        "kind": "ScheduledBot",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": uid or f"uid-{name}",
            "generation": 1,
            "creationTimestamp": format_time(created_at),
        },
        "spec": {
            "meetingUrl": "https://zoom.us/j/123456789",
            "joinAt": format_time(join_at),
            "stagingLeadSeconds": lead,
            "joinDeadlineSeconds": deadline,
        },
    }


@dataclass
class FakeBot:
    """One bot Pod's agent, reduced to its state document and its join rule."""

    address: str
    clock: LoopClock
    doc: dict[str, Any] = field(default_factory=dict)
    #: Every join request received (request ids), accepted or not.
    requests: list[str] = field(default_factory=list)
    #: Joins that started a session: at most one, whatever arrives.
    joins: list[str | None] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)
    reachable: bool = True
    #: Leave calls to fail (unreachable) before one succeeds.
    failing_leaves: int = 0
    #: Takes a join without a word: its state stays, and its answer waits for its next change.
    mute: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.doc = {"protocol": "v1", "version": 1, "state": "ready", "since": self._stamp()}

    def _stamp(self) -> str:
        return format_time(self.clock.now())

    def set(self, state: str, **fields: Any) -> None:
        self.doc = {**self.doc, **fields, "state": state, "version": self.doc["version"] + 1, "since": self._stamp()}
        self.changed.set()
        self.changed = asyncio.Event()

    def join(self, request_id: str | None, *, by: str = "signal") -> None:
        self.requests.append(request_id or "")
        if self.doc["state"] == "ready" and not self.mute:
            self.joins.append(request_id)
            self.set("joining", joinedBy=by, requestId=request_id, joinStartedAt=self._stamp())

    def report(self) -> BotReport:
        return parse_report(json.dumps(self.doc).encode())


class FakeLine:
    """`JoinLine`'s shape over a `FakeBot`: the write is the join."""

    def __init__(self, bots: FakeBots, *, address: str, request_id: str, **_: Any) -> None:
        self.address = address
        self._bots = bots
        self._request_id = request_id
        self._open = False

    async def open(self) -> None:
        bot = self._bots.by_address.get(self.address)
        if bot is None or not bot.reachable:
            raise OSError(f"connection refused: {self.address}")
        self._open = True

    @property
    def ready(self) -> bool:
        return self._open

    def write(self) -> None:
        self._bots.by_address[self.address].join(self._request_id)

    async def answer(self) -> BotReport:
        bot = self._bots.by_address[self.address]
        if bot.mute:
            await bot.changed.wait()
        await asyncio.sleep(0)
        self.close()
        return bot.report()

    def close(self) -> None:
        self._open = False


class FakeBots:
    """`BotClient`'s calls, answered by the `FakeBot` at each address."""

    def __init__(self, clock: LoopClock) -> None:
        self.clock = clock
        self.by_address: dict[str, FakeBot] = {}

    def start(self, address: str) -> FakeBot:
        bot = self.by_address[address] = FakeBot(address=address, clock=self.clock)
        return bot

    def line(self, **kwargs: Any) -> FakeLine:
        return FakeLine(self, **kwargs)

    def _bot(self, address: str) -> FakeBot:
        bot = self.by_address.get(address)
        if bot is None or not bot.reachable:
            raise BotUnreachable(f"GET http://{address}/v1/state: connection refused")
        return bot

    async def state(self, address: str, token: str, *, after: int) -> BotReport:
        bot = self._bot(address)
        if bot.doc["version"] <= after:
            try:
                await asyncio.wait_for(bot.changed.wait(), timeout=30)
            except TimeoutError:
                pass
            bot = self._bot(address)
        return bot.report()

    async def leave(self, address: str, token: str, *, reason: str) -> BotReport:
        bot = self._bot(address)
        if bot.failing_leaves:
            bot.failing_leaves -= 1
            raise BotUnreachable(f"POST http://{address}/v1/leave: connection reset")
        bot.leaves.append(reason)
        if bot.doc["state"] not in ("ended", "failed", "leaving"):
            bot.set("leaving", reason=reason)
        return bot.report()

    async def move_self_join(self, address: str, token: str, *, join_at: datetime) -> BotReport:
        bot = self._bot(address)
        bot.schedules.append(format_time(join_at))
        return bot.report()


class FakeCluster:
    """An in-memory API server for one namespace; watch events reach `engine` a moment later."""

    def __init__(self, clock: LoopClock, bots: FakeBots) -> None:
        self.clock = clock
        self.bots = bots
        self.engine: Engine | None = None
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []
        #: Every Pod ever created: (name, uid).
        self.pods_created: list[tuple[str, str]] = []
        self.status_writes: list[str | None] = []
        #: Seconds between a Pod's deletion and its DELETED event; None: only `finish_deletion`.
        self.pod_grace: float | None = 1.0
        #: Calls to fail once each with a 500 (the API server briefly unavailable).
        self.failing: list[str] = []
        self._version = itertools.count(1000)
        self._uids = itertools.count(1)
        self._ips = itertools.count(10)

    # The test's side ------------------------------------------------------------------

    def apply(self, body: dict[str, Any]) -> None:
        body = copy.deepcopy(body)
        key = ("bots", body["metadata"]["name"])
        self.objects[key] = self._stamped(body)
        self._deliver("bot", "ADDED", self.objects[key])

    def bot(self, name: str) -> dict[str, Any]:
        return self.objects[("bots", name)]

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.bot(name).get("status") or {})

    def edit_spec(self, name: str, **spec: Any) -> None:
        body = copy.deepcopy(self.bot(name))
        body["spec"] |= spec
        body["metadata"]["generation"] += 1
        self._store_bot(body)

    def delete_bot(self, name: str) -> None:
        body = copy.deepcopy(self.bot(name))
        body["metadata"]["deletionTimestamp"] = format_time(self.clock.now())
        self._store_bot(body)

    def pod(self, name: str) -> dict[str, Any] | None:
        return self.objects.get(("pods", children.pod_name(name)))

    def ready(self, name: str) -> FakeBot:
        """The kubelet: the bot's Pod runs and is Ready; its agent answers on the control port."""
        pod = copy.deepcopy(self.pod(name))
        assert pod is not None
        ip = f"10.0.0.{next(self._ips)}"
        pod["status"] = {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": format_time(self.clock.now())}],
        }
        self._store_pod(pod)
        return self.bots.start(f"{ip}:{children.control_port_of(pod)}")

    def crash(self, name: str, *, code: int = 137) -> None:
        """The bot's process dies: the container is terminated, the Pod Failed (restartPolicy Never)."""
        pod = copy.deepcopy(self.pod(name))
        assert pod is not None
        address = f"{pod['status'].get('podIP')}:{children.control_port_of(pod)}"
        if address in self.bots.by_address:
            self.bots.by_address[address].reachable = False
        now = format_time(self.clock.now())
        pod["status"] = {
            "phase": "Failed",
            "podIP": pod["status"].get("podIP"),
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {"name": "bot", "state": {"terminated": {"exitCode": code, "startedAt": now, "finishedAt": now}}}
            ],
        }
        self._store_pod(pod)

    def finish_deletion(self, pod_name: str) -> None:
        pod = self.objects.pop(("pods", pod_name), None)
        if pod is not None:
            self._deliver("pod", "DELETED", pod)

    def bot_at(self, name: str) -> FakeBot:
        pod = self.pod(name)
        assert pod is not None
        return self.bots.by_address[f"{pod['status']['podIP']}:{children.control_port_of(pod)}"]

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]

    # The engine's side (the `Kube` adapter's methods) ------------------------------------

    def _fail(self, call: str) -> None:
        if call in self.failing:
            self.failing.remove(call)
            raise ApiError(500, f"{call}: etcdserver: request timed out")

    async def create_pod(self, namespace: str, body: dict[str, Any], *, dry_run: bool = False) -> bool:
        self._fail("create_pod")
        key = ("pods", body["metadata"]["name"])
        if key in self.objects:
            return False
        pod = copy.deepcopy(body)
        pod["metadata"]["uid"] = f"pod-uid-{next(self._uids)}"
        pod["metadata"]["creationTimestamp"] = format_time(self.clock.now())
        pod["status"] = {"phase": "Pending"}
        self.pods_created.append((pod["metadata"]["name"], pod["metadata"]["uid"]))
        self._store_pod(pod)
        return True

    async def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        self._fail("delete_pod")
        pod = self.objects.get(("pods", name))
        if pod is None or pod["metadata"]["uid"] != uid or pod["metadata"].get("deletionTimestamp"):
            return
        pod = copy.deepcopy(pod)
        pod["metadata"]["deletionTimestamp"] = format_time(self.clock.now() + timedelta(seconds=self.pod_grace or 30))
        self._store_pod(pod)
        if self.pod_grace is not None:
            self.clock.call_at(self.clock.time() + self.pod_grace, self._finish_if, name, uid)

    def _finish_if(self, name: str, uid: str) -> None:
        pod = self.objects.get(("pods", name))
        if pod is not None and pod["metadata"]["uid"] == uid:
            self.finish_deletion(name)

    async def list_pods(self, namespace: str | None, *, label: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (kind, _), o in self.objects.items() if kind == "pods"]

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> bool:
        name = body["metadata"]["name"]
        if name in self.secrets:
            return False
        self.secrets[name] = copy.deepcopy(body)
        return True

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        self._fail("patch_status")
        body = copy.deepcopy(self.bot(name))
        merged = {**(body.get("status") or {}), **status}
        body["status"] = {k: v for k, v in merged.items() if v is not None}
        self.status_writes.append(body["status"].get("state"))
        return copy.deepcopy(self._store_bot(body))

    async def set_finalizer(self, body: dict[str, Any], finalizer: str, *, present: bool) -> dict[str, Any] | None:
        current = copy.deepcopy(self.bot(body["metadata"]["name"]))
        names = [f for f in current["metadata"].get("finalizers") or [] if f != finalizer]
        current["metadata"]["finalizers"] = [*names, finalizer] if present else names
        return copy.deepcopy(self._store_bot(current))

    async def post_event(
        self, body: dict[str, Any], *, type_: str, reason: str, message: str, now: datetime, count: int = 1
    ) -> None:
        self.events.append((type_, reason, message))

    # Storage and watch ------------------------------------------------------------------

    def _stamped(self, body: dict[str, Any]) -> dict[str, Any]:
        body["metadata"]["resourceVersion"] = str(next(self._version))
        return body

    def _store_bot(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        meta = body["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.objects[("bots", name)]
            self._deliver("bot", "DELETED", self._stamped(body))
            for pod in [o for (kind, _), o in self.objects.items() if kind == "pods"]:
                if children.pod_name(name) == pod["metadata"]["name"]:
                    self.finish_deletion(pod["metadata"]["name"])
            # The garbage collector's part: the token Secret goes with its owner.
            owned = [k for k, v in self.secrets.items() if _owner_uid(v) == meta.get("uid")]
            for key in owned:
                del self.secrets[key]
            return body
        self.objects[("bots", name)] = self._stamped(body)
        self._deliver("bot", "MODIFIED", body)
        return body

    def _store_pod(self, pod: dict[str, Any]) -> None:
        key = ("pods", pod["metadata"]["name"])
        kind = "MODIFIED" if key in self.objects else "ADDED"
        self.objects[key] = self._stamped(pod)
        self._deliver("pod", kind, pod)

    def _deliver(self, what: str, kind: str, body: dict[str, Any]) -> None:
        engine, event = self.engine, copy.deepcopy(body)
        if engine is None:
            return

        def deliver() -> None:
            if self.engine is not engine:  # that engine was stopped meanwhile
                return
            (engine.bot_event if what == "bot" else engine.pod_event)(kind, event)

        asyncio.get_running_loop().call_soon(deliver)


class World:
    """A fake cluster, fake bots, and the engine under test, on one loop clock."""

    def __init__(self, **defaults: int) -> None:
        self.clock = LoopClock()
        self.bots = FakeBots(self.clock)
        self.cluster = FakeCluster(self.clock, self.bots)
        self.settings = settings(Defaults(**defaults))
        self.metrics = Metrics()
        self.engine = self._engine()
        #: Set by a scenario that makes passes spin on purpose.
        self.spins_expected = False

    def _engine(self) -> Engine:
        engine = Engine(
            settings=self.settings,
            kube=self.cluster,  # type: ignore[arg-type]
            bots=self.bots,  # type: ignore[arg-type]
            metrics=self.metrics,
            clock=self.clock,
            join_line=self.bots.line,  # type: ignore[arg-type]  # JoinLine's shape, over a FakeBot
            # Always on this loop and this clock, whatever production uses.
            dispatcher=in_loop_dispatcher,
        )
        self.cluster.engine = engine
        return engine

    def at(self, seconds: float) -> datetime:
        """ORIGIN + seconds: scenario instants read as offsets from the start."""
        return ORIGIN + timedelta(seconds=seconds)

    def add(self, name: str, *, join_at: float, **kwargs: Any) -> None:
        """Apply a ScheduledBot that joins at ORIGIN + join_at."""
        self.cluster.apply(bot_body(name, join_at=self.at(join_at), created_at=self.clock.now(), **kwargs))

    async def until(self, seconds: float) -> None:
        """Let the operator run until ORIGIN + seconds (fake time)."""
        await asyncio.sleep(max(0.0, seconds - self._elapsed()))

    def _elapsed(self) -> float:
        return self.clock.time() - ORIGIN.timestamp()

    async def settle(self) -> None:
        """Let every pass and watch event that is due now run (a few milliseconds of fake time)."""
        await asyncio.sleep(0.01)

    async def restart(self) -> None:
        """The operator stops (kill -9: nothing is cleaned up at the bots) and starts again."""
        await self.stop()
        await self.start()

    async def stop(self) -> None:
        self.cluster.engine = None
        await self.engine.close()

    async def start(self) -> None:
        self.metrics = Metrics()
        self.engine = self._engine()
        # As at start-up: the Pods first, then the ScheduledBots (kopf's first listing).
        for pod in await self.cluster.list_pods(NAMESPACE, label=children.LABEL):
            self.engine.pod_event(None, pod)
        for (kind, _), body in list(self.cluster.objects.items()):
            if kind == "bots":
                self.engine.bot_event(None, copy.deepcopy(body))
        await self.settle()

    async def close(self) -> None:
        self.cluster.engine = None
        await self.engine.close()

    def passes(self) -> float:
        return self.metrics.registry.get_sample_value("scheduledbot_passes_total") or 0.0

    def spins(self) -> float:
        return self.metrics.registry.get_sample_value("scheduledbot_pass_spins_total") or 0.0


def _owner_uid(body: dict[str, Any]) -> str | None:
    owners = body["metadata"].get("ownerReferences") or [{}]
    uid = owners[0].get("uid")
    return str(uid) if uid else None
