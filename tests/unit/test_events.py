"""The Event sink: Events never wait in a pass, and a cohort's burst leaves as one aggregated Event."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from scheduledbot.runtime.events import AGGREGATE_AT, IN_FLIGHT, EventSink

NOW = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


class Recorder:
    """Event writes that wait until released, so that a backlog can build up."""

    def __init__(self) -> None:
        self.posted: list[dict[str, Any]] = []
        self.gate = asyncio.Event()

    async def post_event(
        self, body: dict[str, Any], *, type_: str, reason: str, message: str, now: datetime, count: int = 1
    ) -> None:
        await self.gate.wait()
        self.posted.append({"name": body["metadata"]["name"], "reason": reason, "message": message, "count": count})


def bot(name: str, namespace: str = "team") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"}}


async def drain() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_a_lone_event_is_posted_on_its_own_bot() -> None:
    kube = Recorder()
    kube.gate.set()
    sink = EventSink(kube)
    sink.emit(bot("a"), type_="Normal", reason="Scheduled", message="joins at 09:00", now=NOW)
    await drain()
    assert kube.posted == [{"name": "a", "reason": "Scheduled", "message": "joins at 09:00", "count": 1}]
    await sink.close()


async def test_a_cohort_backlog_leaves_as_one_aggregated_event_with_its_count() -> None:
    kube = Recorder()
    sink = EventSink(kube)
    size = 1000
    for i in range(size):
        sink.emit(bot(f"b{i:04d}"), type_="Normal", reason="JoinSignaled", message="sent 3 ms after joinAt", now=NOW)
    sink.emit(bot("other", "elsewhere"), type_="Normal", reason="JoinSignaled", message="sent 1 ms", now=NOW)
    kube.gate.set()
    await drain()
    # The emits came in one burst (no pass yielded between them): one Event for the cohort,
    # on its first bot, and the lone Event of the other namespace on its own.
    assert [(p["name"], p["count"]) for p in kube.posted] == [("b0000", size), ("other", 1)]
    aggregated = kube.posted[0]
    assert aggregated["message"].startswith(f"JoinSignaled for {size} ScheduledBots at once (b0000, b0001, ")
    assert "and 995 more" in aggregated["message"] and "sent 3 ms after joinAt" in aggregated["message"]
    await sink.close()


async def test_a_small_backlog_is_posted_event_by_event() -> None:
    kube = Recorder()
    sink = EventSink(kube)
    for i in range(AGGREGATE_AT - 1):
        sink.emit(bot(f"c{i}"), type_="Warning", reason="ShortLead", message="short", now=NOW)
    kube.gate.set()
    await drain()
    assert sorted(p["name"] for p in kube.posted) == sorted(f"c{i}" for i in range(AGGREGATE_AT - 1))
    assert {p["count"] for p in kube.posted} == {1}
    await sink.close()


async def test_events_arriving_while_the_writers_are_busy_are_aggregated_as_they_pile_up() -> None:
    kube = Recorder()
    sink = EventSink(kube)
    for i in range(IN_FLIGHT):  # each writer takes one and waits on the API server
        sink.emit(bot(f"d{i}"), type_="Normal", reason="Joined", message="in the meeting", now=NOW)
        await drain()
    for i in range(IN_FLIGHT, 500):
        sink.emit(bot(f"d{i}"), type_="Normal", reason="Joined", message="in the meeting", now=NOW)
    kube.gate.set()
    await drain()
    assert sorted(p["count"] for p in kube.posted) == [1] * IN_FLIGHT + [500 - IN_FLIGHT]
    assert sum(p["count"] for p in kube.posted) == 500  # nothing lost, nothing twice
