"""The engine as a standby replica: it keeps its picture but writes nothing until it leads.

A fake Kube records the writes asked of it (sample-controller style); `leading` is a
plain function the test flips, as runtime/leader.py's clock-based answer would flip.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import fakes
from scheduledbot.core import children, tokens
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.engine import Engine, Key
from scheduledbot.runtime.metrics import Metrics


class RecordingKube:
    def __init__(self, body: dict[str, Any]) -> None:
        self.current = body
        self.writes: list[tuple[str, Any]] = []
        self.version = 100

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("status", status.get("state")))
        body = copy.deepcopy(self.current)
        body["status"] = {k: v for k, v in {**(body.get("status") or {}), **status}.items() if v is not None}
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        self.current = body
        return copy.deepcopy(body)

    async def post_event(
        self, body: dict[str, Any], *, type_: str, reason: str, message: str, now: datetime, count: int = 1
    ) -> None:
        self.writes.append(("event", reason))

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> bool:
        self.writes.append(("secret", body["metadata"]["name"]))
        return True

    async def create_pod(self, namespace: str, body: dict[str, Any], *, dry_run: bool = False) -> bool:
        self.writes.append(("pod", body["metadata"]["name"]))
        return True


def bot_due_for_staging() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "apiVersion": "meetingbots.dev/v1alpha1",
        "kind": "ScheduledBot",
        "metadata": {
            "name": "standup",
            "namespace": "team",
            "uid": UID,
            "generation": 1,
            "resourceVersion": "100",
            "creationTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": {
            "meetingUrl": "https://zoom.us/j/123456789",
            "joinAt": (now + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "stagingLeadSeconds": 900,
        },
    }


KEY = b"k" * tokens.MIN_KEY_BYTES
UID = "uid-1"


def settings() -> Settings:
    return fakes.settings(template={"spec": {"containers": [{"name": "bot"}]}}, token_key=KEY)


def engine_with(kube: RecordingKube, leading: Callable[[], bool]) -> tuple[Engine, list[int]]:
    """An engine whose passes are counted; a pass that loops without end fails at the 50th."""
    engine = Engine(settings=settings(), kube=kube, bots=None, metrics=Metrics(), leading=leading)  # type: ignore[arg-type]
    passes = [0]
    original = engine._passes._run

    async def counted(key: Key) -> None:
        passes[0] += 1
        assert passes[0] < 50, "passes spin"
        await original(key)

    engine._passes._run = counted
    return engine, passes


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)


async def test_a_standby_writes_nothing_and_waits_for_the_leaders_write_without_spinning() -> None:
    kube = RecordingKube(bot_due_for_staging())
    engine, passes = engine_with(kube, lambda: False)
    engine.bot_event(None, copy.deepcopy(kube.current))
    await settle()
    assert kube.writes == []
    # Its plan says "scheduled, and the next step now": only a write makes that step; no loop.
    # Two passes: the first, and the one the stager's poke brings with the bot's creation slot.
    assert passes == [2]
    await engine.close()


async def test_a_standby_that_takes_the_lead_passes_every_bot_and_writes_what_was_left_unwritten() -> None:
    kube = RecordingKube(bot_due_for_staging())
    leads = [False]
    engine, _ = engine_with(kube, lambda: leads[0])
    engine.bot_event(None, copy.deepcopy(kube.current))
    await settle()
    leads[0] = True
    engine.wake_all()
    await settle()
    assert [w for w in kube.writes if w[0] != "event"] == [
        ("status", "scheduled"),
        ("secret", children.secret_name("standup", tokens.secret_tag(KEY, uid=UID))),
        ("pod", "standup-bot"),
        ("status", "staged"),
    ]
    # Each Event after its own status (they leave in the background).
    assert [w for w in kube.writes if w[0] == "event"] == [("event", "Scheduled"), ("event", "Staged")]
    assert kube.writes.index(("event", "Staged")) > kube.writes.index(("status", "staged"))
    await engine.close()


async def test_a_leader_that_loses_the_lease_mid_pass_stops_writing_at_once() -> None:
    kube = RecordingKube(bot_due_for_staging())
    answers = iter([True])  # leads for the first write only, then not
    engine, _ = engine_with(kube, lambda: next(answers, False))
    engine.bot_event(None, copy.deepcopy(kube.current))
    await settle()
    assert kube.writes == [("status", "scheduled")]
    await engine.close()
