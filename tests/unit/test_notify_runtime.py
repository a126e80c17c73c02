"""The deliverer inside the engine's passes, with fake adapters: what is written, sent, and when.

No API server and no sink here (tests/e2e/test_notify_delivery.py has both); these
check the runtime's own promises: a change is sent only after the write that
records it, the next write removes it, a failure is written with its back-off and
not retried at once, and a sink that never answers holds neither the status
writes of other bots nor more than --notify-concurrency deliveries.
"""

from __future__ import annotations

import asyncio
import base64
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import fakes
import rfc7386
from scheduledbot.api.notify import SIGNING_KEY_LABEL
from scheduledbot.core.notify import Attempt, Deliver
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.engine import Engine
from scheduledbot.runtime.metrics import Metrics
from scheduledbot.runtime.notify import Notifications

KEY = "whsec_" + base64.b64encode(bytes(range(32))).decode()
SINK = {"url": "https://hooks.example.com/b", "signingKeySecretRef": {"name": "hooks", "key": "k"}}


class FakeKube:
    """The API server's side of the calls the engine and the deliverer make, for several bots."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str]] = []
        self.version = 100

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body = copy.deepcopy(self.objects[name])
        body["status"] = rfc7386.apply(body.get("status") or {}, status)
        body["metadata"]["resourceVersion"] = str(self.version)
        self.objects[name] = body
        self.writes.append((name, copy.deepcopy(body["status"])))
        return copy.deepcopy(body)

    async def post_event(self, body: dict[str, Any], *, type_: str, reason: str, message: str, now: datetime) -> None:
        self.events.append((type_, reason, message))

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> bool:
        return True

    async def create_pod(self, namespace: str, body: dict[str, Any], *, dry_run: bool = False) -> bool:
        return True

    async def read_opted_in_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        encoded = base64.b64encode(KEY.encode()).decode()
        labels = {SIGNING_KEY_LABEL: "true"}
        return {"metadata": {"name": name, "namespace": namespace, "labels": labels}, "data": {"k": encoded}}


class FakeNotifier:
    """Answers as told; `hold` keeps every delivery waiting (a sink that never answers)."""

    def __init__(self, kube: FakeKube, *, status: int = 200, hold: bool = False) -> None:
        self.kube = kube
        self.status = status
        self.hold = asyncio.Event() if hold else None
        self.sent: list[tuple[str, str, list[int]]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def deliver(self, delivery: Deliver, *, name: str, **_: Any) -> Attempt:
        # What the API server holds when the delivery leaves: the change must be recorded there.
        pending = (self.kube.objects[name].get("status") or {}).get("notifications", {}).get("pending") or []
        self.sent.append((name, delivery.id, [entry["sequence"] for entry in pending]))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.hold is not None:
                await self.hold.wait()
            return Attempt(id=delivery.id, status=self.status)
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        pass


def settings(**notify: Any) -> Settings:
    return fakes.settings(template={"spec": {"containers": [{"name": "bot"}]}}, **notify)


def new_bot(name: str, *, notify: dict[str, Any] | None = None, join_in: float = 3600) -> dict[str, Any]:
    now = datetime.now(UTC)
    spec: dict[str, Any] = {
        "meetingUrl": "https://zoom.us/j/123456789",
        "joinAt": (now + timedelta(seconds=join_in)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    if notify is not None:
        spec["notify"] = notify
    return {
        "apiVersion": "meetingbots.dev/v1alpha1",
        "kind": "ScheduledBot",
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "100",
            "creationTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": spec,
    }


async def settle() -> None:
    for _ in range(100):
        await asyncio.sleep(0)


async def start(kube: FakeKube, notifier: FakeNotifier, *names: str, **options: Any) -> tuple[Engine, Notifications]:
    metrics = Metrics()
    notifications = Notifications(
        settings=settings(**options),
        kube=kube,  # type: ignore[arg-type]
        registry=metrics.registry,
        notifier=notifier,  # type: ignore[arg-type]
    )
    engine = Engine(settings=settings(), kube=kube, bots=None, metrics=metrics, notifications=notifications)  # type: ignore[arg-type]
    for name in names:
        kube.objects[name] = new_bot(name, notify=SINK)
        engine.bot_event(None, copy.deepcopy(kube.objects[name]))
    await settle()
    return engine, notifications


async def test_a_change_is_sent_after_the_write_that_records_it_and_the_next_write_removes_it() -> None:
    kube = FakeKube()
    notifier = FakeNotifier(kube)
    engine, _ = await start(kube, notifier, "standup")
    assert notifier.sent == [("standup", "uid-standup.1", [1])], "sent once, with the change already recorded"
    first, second = (status for _, status in kube.writes)
    assert first["state"] == "scheduled" and first["notifications"]["pending"][0]["state"] == "scheduled"
    assert "pending" not in second["notifications"], "the outbox shrinks in the API server's copy"
    assert second["notifications"]["lastDelivered"]["id"] == "uid-standup.1"
    failing = [c for c in second["conditions"] if c["type"] == "NotificationsFailing"]
    assert [c["status"] for c in failing] == ["False"]
    await engine.close()


async def test_a_failed_attempt_is_written_with_its_back_off_and_not_retried_at_once() -> None:
    kube = FakeKube()
    notifier = FakeNotifier(kube, status=503)
    engine, notifications = await start(kube, notifier, "standup")
    await settle()
    assert len(notifier.sent) == 1, "the next attempt waits for its back-off"
    notes = kube.objects["standup"]["status"]["notifications"]
    assert notes["failures"] == 1 and notes["lastError"].startswith("HTTP 503")
    assert notes["pending"][0]["attempts"] == 1
    retry_at = datetime.fromisoformat(notes["nextAttemptAt"].replace("Z", "+00:00"))
    assert timedelta(seconds=2) < retry_at - datetime.now(UTC) <= timedelta(seconds=5)
    failing = [c for c in kube.objects["standup"]["status"]["conditions"] if c["type"] == "NotificationsFailing"]
    assert failing[0]["status"] == "True" and "HTTP 503" in failing[0]["message"]
    assert [reason for _, reason, _ in kube.events if reason.startswith("Notification")] == ["NotificationsFailing"]
    assert notifications.metrics.attempts.labels("retry")._value.get() == 1
    await engine.close()


async def test_a_sink_that_never_answers_holds_neither_other_writes_nor_more_than_the_limit() -> None:
    kube = FakeKube()
    notifier = FakeNotifier(kube, hold=True)
    names = [f"bot{n}" for n in range(6)]
    engine, notifications = await start(kube, notifier, *names, notify_concurrency=2)
    assert {name for name, status in kube.writes if status["state"] == "scheduled"} == set(names)
    assert notifier.most_in_flight == 2 and len(notifier.sent) == 2
    assert notifications._queue() == (6, 6), "six pending, six waiting or sending"
    assert notifier.hold is not None
    notifier.hold.set()
    await settle()
    assert sorted(delivery for _, delivery, _ in notifier.sent) == sorted(f"uid-{n}.1" for n in names)
    assert notifier.most_in_flight == 2
    assert all("pending" not in kube.objects[name]["status"]["notifications"] for name in names)
    await engine.close()


async def test_without_a_sink_nothing_is_recorded() -> None:
    kube = FakeKube()
    notifier = FakeNotifier(kube)
    metrics = Metrics()
    notifications = Notifications(settings=settings(), kube=kube, registry=metrics.registry, notifier=notifier)  # type: ignore[arg-type]
    engine = Engine(settings=settings(), kube=kube, bots=None, metrics=metrics, notifications=notifications)  # type: ignore[arg-type]
    kube.objects["quiet"] = new_bot("quiet")
    engine.bot_event(None, copy.deepcopy(kube.objects["quiet"]))
    await settle()
    assert [status.get("notifications") for _, status in kube.writes] == [None]
    assert notifier.sent == []
    await engine.close()


async def test_a_delivery_due_next_to_a_join_instant_waits_until_just_after_it() -> None:
    kube = FakeKube()
    notifier = FakeNotifier(kube)
    engine, notifications = await start(kube, notifier)
    # Another bot joins in 0.8 s: its window is [-0.2 s, +1.3 s] from now.
    kube.objects["soon"] = new_bot("soon", join_in=0.8)
    engine.bot_event(None, copy.deepcopy(kube.objects["soon"]))
    await settle()
    join_at = datetime.fromisoformat(kube.objects["soon"]["spec"]["joinAt"].replace("Z", "+00:00"))
    kube.objects["later"] = new_bot("later", notify=SINK)
    engine.bot_event(None, copy.deepcopy(kube.objects["later"]))
    await settle()
    assert notifier.sent == [], "nothing starts in a join's quiet window"
    assert kube.objects["later"]["status"]["notifications"]["pending"][0]["state"] == "scheduled"
    timer = notifications._deliveries._bots[("team", "later")].timer
    assert timer is not None
    loop = asyncio.get_running_loop()
    starts_at = datetime.now(UTC) + timedelta(seconds=timer.when() - loop.time())
    assert abs((starts_at - (join_at + timedelta(seconds=0.5))).total_seconds()) < 0.05
    # When the timer fires the delivery starts, even if another window has begun meanwhile:
    # deferred once at most, so that joins every second cannot hold deliveries back forever.
    callback, args = getattr(timer, "_callback"), getattr(timer, "_args")  # noqa: B009 (the handle's own call)
    timer.cancel()
    callback(*args)
    await settle()
    assert [delivery for _, delivery, _ in notifier.sent] == ["uid-later.1"]
    await engine.close()
