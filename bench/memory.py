"""`python -m bench.memory --bots 10000`: what the operator keeps per waiting ScheduledBot, without a cluster.

The runtime is built in process as runtime/handlers.py and runtime/schedule_handlers.py
wire it (the engine with its notifications, the BotSchedule controller, the threaded
join dispatcher), over an in-memory API server. It is fed the watch events the API
server would send for `--bots` ScheduledBots created `--ahead` hours before their
joinAt: ADDED (with metadata.managedFields), each bot's first pass writes its status,
then MODIFIED (the written object, managedFields grown by the status manager). Two
phases, each measured with tracemalloc from the runtime built empty:

- created: the bots created while the operator runs;
- restart: a new runtime relists them (the BotSchedule controller's list at start-up,
  then the watch's list, as kopf delivers it) and passes each once.

What it reports: the bytes traced per bot, and the top allocation sites grouped by the
innermost module of the operator's package on the allocating stack (else the innermost
file): where what is kept was made. kopf's own per-object memory is not in it (no kopf here).

Against another commit: `git worktree add /tmp/base <commit>` and
`PYTHONPATH=/tmp/base/operator python -m bench.memory --bots 10000` (the script prints
which package it measured).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import itertools
import json
import linecache
import tracemalloc
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import scheduledbot
from scheduledbot.adapters.egress import EgressClient, EgressPolicy
from scheduledbot.runtime import config
from scheduledbot.runtime.classes import ClassCatalog
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.engine import Engine
from scheduledbot.runtime.metrics import Metrics
from scheduledbot.runtime.notify import Notifications
from scheduledbot.runtime.schedule_feeds import FeedReader
from scheduledbot.runtime.schedules import ScheduleController

NAMESPACE = "bench"
GROUP_VERSION = "meetingbots.dev/v1alpha1"
#: A pass and its watch events are done when nothing changed for this long.
QUIET_SECONDS = 0.5
#: Frames kept per allocation: enough to reach the operator's module from json, copy and dataclasses.
FRAMES = 8
JSON = "json (objects as parsed from the API)"
API_STORE = "the in-memory API server's own objects"

Body = dict[str, Any]


def _settings() -> Settings:
    """The operator's own defaults (as `scheduledbot-operator --no-webhook` reads them), with a token key."""
    return dataclasses.replace(config.load(["--no-webhook"]), token_key=b"k" * 32)


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fields(value: Any) -> Any:
    """A fieldsV1 tree of `value`, as the API server records a manager's fields."""
    if isinstance(value, dict):
        return {".": {}, **{f"f:{k}": _fields(v) for k, v in value.items()}}
    if isinstance(value, list) and value and isinstance(value[0], dict) and "type" in value[0]:
        return {".": {}, **{f'k:{{"type":"{item["type"]}"}}': _fields(item) for item in value}}
    return {}


def _managed(manager: str, operation: str, at: datetime, tree: Body, subresource: str | None = None) -> Body:
    entry = {
        "manager": manager,
        "operation": operation,
        "apiVersion": GROUP_VERSION,
        "time": _stamp(at),
        "fieldsType": "FieldsV1",
        "fieldsV1": tree,
    }
    if subresource is not None:
        entry["subresource"] = subresource
    return entry


def bot_body(index: int, *, now: datetime, join_at: datetime) -> Body:
    """A ScheduledBot as the API server stores it after `kubectl create` (the benchmark's shape)."""
    spec = {
        "meetingUrl": f"https://zoom.us/j/{8_000_000_000 + index}",
        "joinAt": _stamp(join_at),
        "botName": f"Notetaker {index}",
    }
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "ScheduledBot",
        "metadata": {
            "name": f"bot-{index:05d}",
            "namespace": NAMESPACE,
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "creationTimestamp": _stamp(now),
            "labels": {"bench": "memory"},
            "managedFields": [
                _managed(
                    "kubectl-create",
                    "Update",
                    now,
                    {"f:metadata": _fields({"labels": {"bench": ""}}), "f:spec": _fields(spec)},
                )
            ],
        },
        "spec": spec,
    }


def _merge(target: Body, patch: Body) -> Body:
    """RFC 7386 merge patch."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass
class Api:
    """The API calls a waiting bot's passes make, over stored objects; watch events go to `deliver`."""

    deliver: Callable[[str | None, Body], None] = lambda kind, body: None
    #: As JSON text, as etcd keeps them: nothing the operator was handed is referenced here.
    objects: dict[str, str] = field(default_factory=dict)
    status_writes: int = 0
    events: int = 0
    _version: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def create(self, body: Body) -> None:
        body["metadata"]["resourceVersion"] = str(next(self._version))
        self.objects[body["metadata"]["name"]] = json.dumps(body)
        self.deliver("ADDED", json.loads(self.objects[body["metadata"]["name"]]))

    async def patch_status(self, namespace: str, name: str, patch: Body) -> Body | None:
        self.status_writes += 1
        body: Body = json.loads(self.objects[name])
        body["status"] = _merge(body.get("status") or {}, patch)
        now = datetime.now(UTC)
        managed = [m for m in body["metadata"]["managedFields"] if m.get("subresource") != "status"]
        tree = {"f:status": _fields(body["status"])}
        body["metadata"]["managedFields"] = [*managed, _managed("scheduledbot", "Update", now, tree, "status")]
        body["metadata"]["resourceVersion"] = str(next(self._version))
        text = self.objects[name] = json.dumps(body)
        asyncio.get_running_loop().call_soon(self.deliver, "MODIFIED", json.loads(text))
        answer: Body = json.loads(text)
        return answer

    async def post_event(self, body: Body, **_: Any) -> None:
        self.events += 1

    async def list_bots(self, namespace: str | None) -> list[Body]:
        listed: list[Body] = json.loads("[" + ",".join(self.objects.values()) + "]")
        return listed

    async def list_schedules(self, namespace: str | None) -> list[Body]:
        return []

    async def list_pods(self, namespace: str | None, *, label: str) -> list[Body]:
        return []


class NoBots:
    """No bot Pod is reached while the bots wait."""

    async def close(self) -> None:
        return None


@dataclass
class Runtime:
    engine: Engine
    schedules: ScheduleController
    egress: EgressClient

    def bot_event(self, kind: str | None, body: Body) -> None:
        # kopf hands the same event object to every handler of the resource.
        self.engine.bot_event(kind, body)
        self.schedules.bot_event(kind, body)

    async def close(self) -> None:
        await self.engine.close()
        await self.schedules.close()
        await self.egress.close()


def build(api: Api) -> Runtime:
    """The runtime as runtime/handlers.py and runtime/schedule_handlers.py wire it (no leader election)."""
    config = _settings()
    kube = cast(Any, api)
    metrics = Metrics()
    notifications = Notifications(settings=config, kube=kube, registry=metrics.registry)
    engine = Engine(
        settings=config,
        kube=kube,
        bots=cast(Any, NoBots()),
        metrics=metrics,
        classes=ClassCatalog(),
        notifications=notifications,
    )
    egress = EgressClient(policy=EgressPolicy(admitted_hosts=config.extra_feed_hosts), user_agent="bench")
    schedules = ScheduleController(
        kube=kube,
        feeds=FeedReader(client=egress, read_secret=cast(Any, _no_secret)),
        extra_meeting_hosts=config.extra_meeting_hosts,
    )
    runtime = Runtime(engine=engine, schedules=schedules, egress=egress)
    api.deliver = runtime.bot_event
    return runtime


async def _no_secret(namespace: str, name: str) -> None:
    return None


async def quiet(api: Api) -> None:
    """Until every pass and watch event is done: nothing changed for QUIET_SECONDS."""
    last: tuple[int, ...] = ()
    while True:
        await asyncio.sleep(QUIET_SECONDS)
        state = (api.status_writes, api.events, len(asyncio.all_tasks()))
        if state == last:
            return
        last = state


def _group(frames: tuple[tuple[str, int], ...], root: str) -> str:
    """The innermost module of the operator's package on the stack (`frames`: newest first), else
    the innermost file; what this script's in-memory API server stores for itself is set apart."""
    for filename, _ in frames:
        if filename == __file__:
            # The API server's answers and watch events (parsed JSON) are the operator's to keep or
            # drop; the JSON text of the objects it stores is its own.
            return JSON if frames[0][0].endswith("json/decoder.py") else API_STORE
        if filename.startswith(root):
            return "scheduledbot." + filename[len(root) :].removesuffix(".py").replace("/", ".")
    return JSON if "/json/" in frames[0][0] else Path(frames[0][0]).stem


def _groups(snapshot: tracemalloc.Snapshot) -> dict[str, int]:
    root = str(Path(scheduledbot.__file__).parent) + "/"
    groups: dict[str, int] = {}
    named: dict[tuple[tuple[str, int], ...], str] = {}
    # The raw traces (domain, size, frames newest first, ...): Trace objects for a million
    # allocations would take minutes.
    for trace in snapshot.traces._traces:  # type: ignore[attr-defined]
        size, frames = trace[1], trace[2]
        key = named.get(frames)
        if key is None:
            key = named[frames] = _group(frames, root)
        groups[key] = groups.get(key, 0) + size
    return groups


def report(title: str, before: dict[str, int], after: dict[str, int], bots: int, top: int) -> int:
    groups = {name: size - before.get(name, 0) for name, size in after.items() if name != API_STORE}
    total = sum(groups.values()) - sum(size for name, size in before.items() if name not in after)
    store = after.get(API_STORE, 0) - before.get(API_STORE, 0)
    print(f"\n== {title}: {total / 1e6:.1f} MB traced, {total / bots:,.0f} bytes per bot")
    for name, size in sorted(groups.items(), key=lambda item: -item[1])[:top]:
        print(f"  {size / bots:>8,.0f} B/bot  {size / 1e6:6.1f} MB  {name}")
    print(f"  (not counted: {store / 1e6:.1f} MB the in-memory API server stores)")
    return total


def _snapshot() -> dict[str, int]:
    gc.collect()
    return _groups(tracemalloc.take_snapshot())


async def measure(bots: int, *, ahead_hours: float, instants: int, top: int) -> None:
    print(f"package measured: {Path(scheduledbot.__file__).parent}")
    tracemalloc.start(FRAMES)
    api = Api()
    runtime = build(api)
    await quiet(api)
    empty = _snapshot()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = now + timedelta(hours=ahead_hours)
    for index in range(bots):
        # Meetings start on the minute: `instants` distinct joinAts, many bots sharing each.
        api.create(bot_body(index, now=now, join_at=first + timedelta(minutes=index % instants)))
        if index % 500 == 499:
            await asyncio.sleep(0)
    await quiet(api)
    created = _snapshot()
    print(f"status writes: {api.status_writes}, events posted: {api.events}")
    per_created = report("created (watch events, first passes)", empty, created, bots, top)

    await runtime.close()
    del runtime
    linecache.clearcache()
    api.deliver = lambda kind, body: None
    restarted = build(api)
    await quiet(api)
    empty = _snapshot()
    await restarted.schedules.prime(())
    for body in await api.list_bots(None):  # kopf's watch lists them again
        restarted.bot_event(None, body)
    await quiet(api)
    relisted = _snapshot()
    per_restart = report("restart (relisted, one pass each)", empty, relisted, bots, top)
    await restarted.close()
    print(f"\nbytes per bot: created {per_created / bots:,.0f}, restart {per_restart / bots:,.0f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=10_000)
    parser.add_argument("--ahead", type=float, default=6.0, help="hours from now to the first joinAt")
    parser.add_argument("--instants", type=int, default=60, help="distinct joinAts, a minute apart")
    parser.add_argument("--top", type=int, default=15, help="allocation sites (modules) listed")
    args = parser.parse_args(argv)
    asyncio.run(measure(args.bots, ahead_hours=args.ahead, instants=args.instants, top=args.top))


if __name__ == "__main__":
    main()
