"""The stager (runtime/stager.py): which waiting bot gets which creation slot, and the pace it learns.

The clock is the real one but nothing waits on it: the cohorts are placed so that a
window is open (or far away) when the stager plans; only loop iterations pass.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from scheduledbot.runtime.stager import BACKLOG, INITIAL_RATE, INITIAL_READY_SECONDS, MEASURE_SECONDS, Stager


async def turn() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_open_window_gives_each_bot_of_the_cohort_one_slot_spread_before_stage_at() -> None:
    poked: list[str] = []
    stager: Stager[str] = Stager(poke=poked.append, rate=10)
    now = datetime.now(UTC)
    stage_at, join_at = now + timedelta(seconds=2), now + timedelta(seconds=60)
    # 50 bots at 10/s need 5 s: the window opened 3 s ago, so what is left of it is used.
    names = [f"bot-{i:02d}" for i in range(50)]
    assert all(stager.want(n, stage_at=stage_at, join_at=join_at) is None for n in names)
    await turn()
    assert sorted(poked) == names  # each poked once, to come and take its slot
    slots = [stager.want(n, stage_at=stage_at, join_at=join_at) for n in names]
    assert all(s is not None and now - timedelta(seconds=1) <= s <= stage_at for s in slots)
    taken = [s for s in slots if s is not None]
    assert taken == sorted(taken) and len(set(taken)) == len(slots)  # spread, in a stable order
    stager.close()


async def test_a_cohort_far_ahead_gets_no_slot_yet_and_a_bot_that_left_is_not_poked() -> None:
    poked: list[str] = []
    stager: Stager[str] = Stager(poke=poked.append)
    far = datetime.now(UTC) + timedelta(hours=6)
    stager.want("later", stage_at=far, join_at=far + timedelta(minutes=5))
    soon = datetime.now(UTC) + timedelta(milliseconds=10)
    stager.want("gone", stage_at=soon, join_at=soon + timedelta(minutes=5))
    stager.done("gone")
    await turn()
    assert poked == []
    assert stager.want("later", stage_at=far, join_at=far + timedelta(minutes=5)) is None
    stager.close()


async def test_the_pace_and_the_time_to_ready_are_learned_while_the_cluster_is_the_limit() -> None:
    stager: Stager[int] = Stager(poke=lambda key: None)
    for key in range(BACKLOG + 40):
        stager.created(key)
    # The nodes make 4 Pods Ready per second, each 30 s after its creation.
    at = 1000.0
    for key in range(41):
        stager.ready(key, seconds=30.0, at=at)
        at += 0.25
    assert stager.rate < INITIAL_RATE  # moved towards 4/s
    assert at - 1000.0 > MEASURE_SECONDS
    assert stager.ready_seconds > INITIAL_READY_SECONDS
    stager.close()


async def test_no_pace_is_learned_without_a_backlog() -> None:
    stager: Stager[int] = Stager(poke=lambda key: None)
    at = 1000.0
    for key in range(100):  # each Pod Ready before the next is created: the pace was the limit
        stager.created(key)
        stager.ready(key, seconds=2.0, at=at)
        at += 1.0
    assert stager.rate == INITIAL_RATE
    assert stager.ready_seconds == INITIAL_READY_SECONDS
    stager.close()
