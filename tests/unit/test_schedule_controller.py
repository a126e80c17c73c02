"""The BotSchedule controller with a fake adapter that records what it is asked (as test_engine.py does).

No API server here (tests/e2e/test_schedules.py has the real one) and no real
sleeps: the clock is fixed and the passes run on the test's loop. These check the
controller's own promises: one create per occurrence and no write for a pass that
changes nothing, never adopting a ScheduledBot it did not create, and a wake-up
computed from the plan.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduledbot.adapters.egress import EgressClient, EgressPolicy
from scheduledbot.adapters.kube import ApiError
from scheduledbot.runtime.schedule_feeds import FeedReader
from scheduledbot.runtime.schedules import ScheduleController

NOW = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)
NS = "team"


class FakeKube:
    """Holds the objects it was given or asked to create; records every write."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.version = 100
        self.bots: dict[str, dict[str, Any]] = {}
        self.schedule: dict[str, Any] = {}
        #: Names whose creation the API server refuses (a quota, a policy).
        self.refuse: set[str] = set()

    def _written(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(body)

    async def list_bots(self, namespace: str | None) -> list[dict[str, Any]]:
        return [copy.deepcopy(b) for b in self.bots.values()]

    async def list_schedules(self, namespace: str | None) -> list[dict[str, Any]]:
        return [copy.deepcopy(self.schedule)] if self.schedule else []

    async def create_bot(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        name = body["metadata"]["name"]
        self.calls.append(("create", name))
        if name in self.refuse:
            raise ApiError(403, f'scheduledbots "{name}" is forbidden: exceeded quota')
        if name in self.bots:
            return None
        body = copy.deepcopy(body)
        body["metadata"]["uid"] = str(uuid.uuid4())
        self.bots[name] = self._written(body)
        return copy.deepcopy(self.bots[name])

    async def patch_bot_spec(self, namespace: str, name: str, **_: Any) -> dict[str, Any] | None:
        self.calls.append(("patch", name))
        return None

    async def delete_bot(self, namespace: str, name: str, *, uid: str) -> None:
        self.calls.append(("delete", name))

    async def patch_schedule_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("status", name))
        merged = {k: v for k, v in {**(self.schedule.get("status") or {}), **status}.items() if v is not None}
        self.schedule["status"] = merged
        return self._written(self.schedule)

    async def post_event(self, body: dict[str, Any], *, reason: str, **_: Any) -> None:
        self.calls.append(("event", reason))

    async def read_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return None


def daily_schedule() -> dict[str, Any]:
    return {
        "apiVersion": "meetingbots.dev/v1alpha1",
        "kind": "BotSchedule",
        "metadata": {
            "name": "standup",
            "namespace": NS,
            "uid": "schedule-uid",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": "2026-03-01T00:00:00Z",
        },
        "spec": {
            "timeZone": "Europe/Berlin",
            "cron": "0 9 * * *",
            "horizonSeconds": 3 * 86400,
            "botTemplate": {"spec": {"meetingUrl": "https://zoom.us/j/123456789"}},
        },
    }


@pytest.fixture
async def controller() -> AsyncIterator[tuple[ScheduleController, FakeKube]]:
    kube = FakeKube()
    async with EgressClient(policy=EgressPolicy()) as client:
        made = ScheduleController(
            kube=kube,  # type: ignore[arg-type]
            feeds=FeedReader(client=client, read_secret=kube.read_secret),
            extra_meeting_hosts=frozenset(),
            clock=lambda: NOW,
        )
        yield made, kube
        await made.close()


async def settle(controller: ScheduleController) -> None:
    """Let every pass that was poked run to its end (no clock: they never sleep)."""
    for _ in range(100):
        await asyncio.sleep(0)


async def add_daily_schedule(ctl: ScheduleController, kube: FakeKube) -> None:
    """The daily schedule stored, the controller started and its ADDED event handled to the end."""
    kube.schedule = daily_schedule()
    await ctl.prime(())
    ctl.schedule_event("ADDED", copy.deepcopy(kube.schedule))
    await settle(ctl)


def children_of(kube: FakeKube) -> list[str]:
    return sorted(kube.bots)


async def test_one_create_per_occurrence_and_no_write_for_a_pass_that_changes_nothing(
    controller: tuple[ScheduleController, FakeKube],
) -> None:
    ctl, kube = controller
    await add_daily_schedule(ctl, kube)
    # 09:00 Berlin is 08:00 UTC in March: three days within the three-day horizon.
    expected = [f"standup-{int(datetime(2026, 3, d, 8, tzinfo=UTC).timestamp())}" for d in (2, 3, 4)]
    assert children_of(kube) == expected
    assert [c for c in kube.calls if c[0] == "create"] == [("create", n) for n in expected]
    assert [c for c in kube.calls if c[0] == "status"] == [("status", "standup")]
    writes = len(kube.calls)
    # The watch brings the children and the status write back: nothing more to do.
    for body in kube.bots.values():
        ctl.bot_event("ADDED", copy.deepcopy(body))
    ctl.schedule_event("MODIFIED", copy.deepcopy(kube.schedule))
    await settle(ctl)
    assert kube.calls[writes:] == []
    assert ctl.counts.creates == 3 and ctl.counts.status_writes == 1


async def test_a_bot_with_a_childs_name_that_the_schedule_did_not_create_is_never_adopted(
    controller: tuple[ScheduleController, FakeKube],
) -> None:
    ctl, kube = controller
    taken = f"standup-{int(datetime(2026, 3, 3, 8, tzinfo=UTC).timestamp())}"
    kube.bots[taken] = {
        "metadata": {"name": taken, "namespace": NS, "uid": "by-hand", "resourceVersion": "5"},
        "spec": {"meetingUrl": "https://zoom.us/j/999", "joinAt": "2026-03-03T08:00:00Z"},
    }
    await add_daily_schedule(ctl, kube)
    ctl.schedule_event("MODIFIED", copy.deepcopy(kube.schedule))
    await settle(ctl)
    assert ("create", taken) not in kube.calls
    assert not [c for c in kube.calls if c[0] in ("patch", "delete")], "a bot it did not create is never touched"
    assert kube.calls.count(("event", "NameTaken")) == 1, "said once, not at every pass"
    assert kube.bots[taken]["metadata"]["uid"] == "by-hand"


async def test_the_next_pass_is_timed_by_the_plan_not_a_period(
    controller: tuple[ScheduleController, FakeKube],
) -> None:
    ctl, kube = controller
    await add_daily_schedule(ctl, kube)
    entry = ctl._passes._slots[(NS, "standup")]
    assert entry.timer is not None
    # The next event: today's 08:00 UTC occurrence starts (status.next moves on) in 90 minutes.
    delay = entry.timer.when() - asyncio.get_running_loop().time()
    assert timedelta(seconds=delay) == pytest.approx(timedelta(minutes=90), abs=timedelta(seconds=1))
    assert ctl.first_plan_seconds is not None, "every schedule known at start-up was planned"


async def test_a_refused_child_is_said_once_and_the_other_children_are_still_made(
    controller: tuple[ScheduleController, FakeKube],
) -> None:
    ctl, kube = controller
    refused = f"standup-{int(datetime(2026, 3, 3, 8, tzinfo=UTC).timestamp())}"
    kube.refuse.add(refused)
    kube.schedule = daily_schedule()
    await ctl.prime(())
    await settle(ctl)
    ctl.schedule_event("MODIFIED", copy.deepcopy(kube.schedule))
    await settle(ctl)
    assert len(kube.bots) == 2 and refused not in kube.bots
    assert kube.calls.count(("event", "ChildRefused")) == 1
    assert ctl._passes._slots[(NS, "standup")].failures == 0, "a refusal is not a failed pass retried in a loop"


async def test_a_standby_writes_nothing_until_it_leads() -> None:
    kube = FakeKube()
    kube.schedule = daily_schedule()
    leads = False
    async with EgressClient(policy=EgressPolicy()) as client:
        ctl = ScheduleController(
            kube=kube,  # type: ignore[arg-type]
            feeds=FeedReader(client=client, read_secret=kube.read_secret),
            extra_meeting_hosts=frozenset(),
            clock=lambda: NOW,
            leading=lambda: leads,
        )
        await ctl.prime(())
        await settle(ctl)
        assert kube.calls == [] and ctl._passes._slots[(NS, "standup")].timer is None
        leads = True
        ctl.wake_all()
        await settle(ctl)
        assert len(kube.bots) == 3 and ("status", "standup") in kube.calls
        await ctl.close()
