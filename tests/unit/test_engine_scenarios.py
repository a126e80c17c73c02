"""The engine's lifecycle scenarios, on looptime's fake clock with recording fakes (tests/unit/fakes.py).

Each scenario is minutes of a bot's life run in milliseconds: the fake cluster delivers
watch events as the API server would, the fake bots answer as the agent would (one join
at most), and the clock only moves when the operator has nothing left to do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fakes import FakeBot, World
from scheduledbot.core import children
from scheduledbot.core.model import FINALIZER, LEAVE_TIMEOUT_SECONDS
from scheduledbot.core.plan import plan
from scheduledbot.timestamps import format_time

pytestmark = [pytest.mark.looptime, pytest.mark.timeout(30)]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    yield w
    await w.close()
    # No scenario's plan may ask for "now" without changing anything (but the one that fakes it).
    assert w.spins() == 0 or w.spins_expected


async def staged_and_ready(world: World, name: str = "standup", *, join_at: float = 30, lead: int = 20) -> None:
    world.add(name, join_at=join_at, lead=lead)
    await world.until(join_at - lead + 0.5)
    assert world.cluster.status(name)["state"] == "staged"
    world.cluster.ready(name)
    await world.settle()


async def in_meeting(world: World, state: str) -> FakeBot:
    """A bot signalled at 30 s that reports `state` at 31 s."""
    await staged_and_ready(world)
    bot = world.cluster.bot_at("standup")
    await world.until(31)
    bot.set(state)
    await world.settle()
    return bot


async def test_a_bot_is_scheduled_staged_signalled_at_join_at_and_followed_into_the_meeting(world: World) -> None:
    await staged_and_ready(world)
    bot = world.cluster.bot_at("standup")
    await world.until(29.9)
    assert bot.requests == []
    await world.until(30.5)
    assert bot.joins == [f"uid-standup@{format_time(world.at(30))}"]
    assert world.cluster.status("standup")["state"] == "joining"
    bot.set("joined")
    await world.settle()
    status = world.cluster.status("standup")
    assert status["state"] == "joined"
    assert status["joinedAt"] == bot.doc["since"]
    assert world.cluster.reasons().count("Joined") == 1
    assert FINALIZER in world.cluster.bot("standup")["metadata"]["finalizers"]


async def test_the_signal_written_runs_no_pass_of_its_own_the_bots_word_does(world: World) -> None:
    # At an instant of 1,000 bots a pass per written signal queued ahead of every answer's pass.
    await staged_and_ready(world)
    bot = world.cluster.bot_at("standup")
    bot.mute = True
    await world.until(29.9)
    passes = world.passes()
    await world.until(30.5)
    assert bot.requests == [f"uid-standup@{format_time(world.at(30))}"]
    assert world.passes() == passes
    assert world.cluster.status("standup")["state"] == "staged"
    bot.set("joining", joinedBy="signal", joinStartedAt=format_time(world.at(30.5)))
    await world.settle()
    status = world.cluster.status("standup")
    assert status["state"] == "joining"
    # The written signal was kept for this pass: only a signal sent says when.
    assert "joinSignaledAt" in status


async def test_a_reschedule_of_a_scheduled_bot_moves_its_staging(world: World) -> None:
    world.add("standup", join_at=100)
    await world.until(10)
    world.cluster.edit_spec("standup", joinAt=format_time(world.at(200)))
    await world.until(100)
    assert world.cluster.status("standup")["state"] == "scheduled"
    assert world.cluster.status("standup")["joinAt"] == format_time(world.at(200))
    assert world.cluster.pods_created == []
    assert "Rescheduled" in world.cluster.reasons()
    await world.until(181)
    assert world.cluster.status("standup")["state"] == "staged"
    assert len(world.cluster.pods_created) == 1


async def test_a_reschedule_within_the_lead_keeps_the_pod_and_moves_its_safety_net(world: World) -> None:
    await staged_and_ready(world)
    bot = world.cluster.bot_at("standup")
    world.cluster.edit_spec("standup", joinAt=format_time(world.at(28)))
    await world.until(27)
    assert bot.schedules == [format_time(world.at(28))]
    assert bot.requests == []
    await world.until(29)
    assert bot.joins == [f"uid-standup@{format_time(world.at(28))}"]
    assert len(world.cluster.pods_created) == 1


async def test_a_reschedule_beyond_the_lead_releases_the_pod_and_stages_a_new_one(world: World) -> None:
    await staged_and_ready(world)
    old = world.cluster.bot_at("standup")
    world.cluster.edit_spec("standup", joinAt=format_time(world.at(100)))
    await world.until(20)
    assert world.cluster.status("standup")["state"] == "scheduled"
    assert world.cluster.pod("standup") is None
    await world.until(80.5)
    assert world.cluster.status("standup")["state"] == "staged"
    world.cluster.ready("standup")
    await world.until(101)
    assert old.requests == []
    assert world.cluster.bot_at("standup").joins == [f"uid-standup@{format_time(world.at(100))}"]
    assert len(world.cluster.pods_created) == 2


async def test_deleting_a_scheduled_bot_is_immediate_and_stops_its_timers(world: World) -> None:
    world.add("standup", join_at=100)
    await world.until(5)
    world.cluster.delete_bot("standup")
    await world.until(200)
    assert ("bots", "standup") not in world.cluster.objects
    assert world.cluster.pods_created == []
    assert world.cluster.status_writes == ["scheduled"]


async def test_deleting_a_staged_bot_sends_no_join(world: World) -> None:
    await staged_and_ready(world)
    bot = world.cluster.bot_at("standup")
    world.cluster.delete_bot("standup")
    await world.until(60)
    assert bot.requests == []
    assert world.cluster.pod("standup") is None


async def test_deleting_a_bot_in_a_meeting_asks_it_to_leave_then_lets_go(world: World) -> None:
    bot = await in_meeting(world, "recording")
    world.cluster.delete_bot("standup")
    await world.settle()
    assert bot.leaves == ["ScheduledBot deleted"]
    assert ("bots", "standup") in world.cluster.objects  # held by the finalizer while it leaves
    bot.set("ended", reason="LeaveRequested")
    await world.settle()
    assert ("bots", "standup") not in world.cluster.objects


async def test_deleting_a_joining_bot_that_never_answers_the_leave_lets_go_at_the_leave_timeout(
    world: World,
) -> None:
    await staged_and_ready(world)
    bot = world.cluster.bot_at("standup")
    await world.until(30.5)
    assert world.cluster.status("standup")["state"] == "joining"
    bot.failing_leaves = 1_000
    world.cluster.delete_bot("standup")
    await world.until(45)
    assert ("bots", "standup") in world.cluster.objects
    assert 1_000 - bot.failing_leaves >= 5  # asked to leave again and again, backing off
    # The leave's back-off (up to 5 s) does not push back the pass the timeout asked for.
    await world.until(30.5 + LEAVE_TIMEOUT_SECONDS - 0.1)
    assert ("bots", "standup") in world.cluster.objects
    await world.until(30.5 + LEAVE_TIMEOUT_SECONDS + 0.1)
    assert ("bots", "standup") not in world.cluster.objects
    assert bot.leaves == []


async def test_deleting_an_ended_bot_lets_go_at_once(world: World) -> None:
    bot = await in_meeting(world, "joined")
    bot.set("ended", reason="MaxDuration")
    await world.settle()
    assert world.cluster.status("standup")["state"] == "ended"
    world.cluster.delete_bot("standup")
    await world.settle()
    assert ("bots", "standup") not in world.cluster.objects
    assert bot.leaves == []


async def test_a_leave_that_fails_once_is_sent_again(world: World) -> None:
    bot = await in_meeting(world, "joined")
    bot.failing_leaves = 1
    world.cluster.delete_bot("standup")
    await world.until(40)
    assert bot.leaves == ["ScheduledBot deleted"]


async def test_a_failed_pass_is_tried_again(world: World) -> None:
    world.cluster.failing = ["create_pod"]
    world.add("standup", join_at=30, lead=20)
    await world.until(10.2)
    assert world.cluster.pods_created == []
    await world.until(12)
    assert world.cluster.status("standup")["state"] == "staged"
    assert len(world.cluster.pods_created) == 1


async def test_a_restart_with_an_armed_join_still_joins_once(world: World) -> None:
    await staged_and_ready(world)
    bot = world.cluster.bot_at("standup")
    await world.until(25)
    await world.restart()
    await world.until(31)
    assert bot.joins == [f"uid-standup@{format_time(world.at(30))}"]
    assert world.cluster.status("standup")["state"] == "joining"
    assert len(world.cluster.pods_created) == 1


async def test_a_bot_created_again_under_the_same_name_is_a_new_bot(world: World) -> None:
    await staged_and_ready(world)
    old = world.cluster.bot_at("standup")
    world.cluster.delete_bot("standup")
    await world.settle()
    world.add("standup", join_at=60, lead=20, uid="uid-standup-2")
    await world.until(40.5)
    assert world.cluster.status("standup")["state"] == "staged"
    pod = world.cluster.pod("standup")
    assert pod is not None
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-standup-2"
    world.cluster.ready("standup")
    await world.until(61)
    assert old.requests == []
    assert world.cluster.bot_at("standup").joins == [f"uid-standup-2@{format_time(world.at(60))}"]
    assert children.pod_name("standup") == pod["metadata"]["name"]


async def test_a_reschedule_out_of_the_lead_and_back_while_the_pod_is_deleting_does_not_stall_others(
    world: World,
) -> None:
    world.cluster.pod_grace = None  # the released Pod stays Terminating until its kubelet is done
    world.add("other", join_at=40, lead=20)
    await staged_and_ready(world, join_at=25, lead=20)
    world.cluster.edit_spec("standup", joinAt=format_time(world.at(60)))  # beyond the lead: released
    await world.settle()
    assert world.cluster.status("standup")["state"] == "scheduled"
    world.cluster.edit_spec("standup", joinAt=format_time(world.at(21)))  # back within it, Pod still deleting
    await world.until(20.5)
    world.cluster.ready("other")
    await world.until(41)
    # The other bot was staged and signalled on time: the loop was never starved.
    assert world.cluster.bot_at("other").joins == [f"uid-other@{format_time(world.at(40))}"]
    assert world.spins() == 0
    assert world.passes() < 100
    # The released Pod goes at last; the bot is staged again with a new one and joins.
    world.cluster.finish_deletion(children.pod_name("standup"))
    await world.settle()
    assert world.cluster.status("standup")["state"] == "staged"
    assert len([p for p in world.cluster.pods_created if p[0] == children.pod_name("standup")]) == 2


async def test_a_pass_asking_for_now_without_any_change_is_counted_and_deferred(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:

    def restless(**kwargs: Any) -> Any:
        decided = plan(**kwargs)
        return dataclasses.replace(decided, wake_at=kwargs["now"])

    monkeypatch.setattr("scheduledbot.runtime.engine.plan", restless)
    world.spins_expected = True
    world.add("standup", join_at=300)
    await world.until(10)
    assert world.cluster.status("standup")["state"] == "scheduled"
    assert 5 <= world.spins() <= 11  # one deferred pass a second, not thousands
    assert world.passes() <= world.spins() + 3


async def test_a_status_write_lost_after_the_pod_was_created_leaves_one_pod(world: World) -> None:
    world.add("standup", join_at=30, lead=20)
    await world.settle()
    world.cluster.failing = ["patch_status"]  # the `staged` write is lost after the Pod's creation
    await world.until(12)
    assert world.cluster.status("standup")["state"] == "staged"
    staged = [message for _, reason, message in world.cluster.events if reason == "Staged"]
    assert "adopted" in staged[-1]
    world.cluster.ready("standup")
    await world.until(31)
    assert len(world.cluster.pods_created) == 1
    assert world.cluster.bot_at("standup").joins == [f"uid-standup@{format_time(world.at(30))}"]


async def test_an_operator_killed_between_the_pod_and_the_staged_write_adopts_the_pod(world: World) -> None:
    world.add("standup", join_at=30, lead=20)
    await world.settle()
    world.cluster.failing = ["patch_status"]
    await world.until(10.1)  # the Pod is created, its `staged` write fails...
    assert len(world.cluster.pods_created) == 1
    await world.restart()  # ...and the operator is killed before the retry
    await world.settle()
    assert world.cluster.status("standup")["state"] == "staged"
    world.cluster.ready("standup")
    await world.until(31)
    assert len(world.cluster.pods_created) == 1
    assert world.cluster.bot_at("standup").joins == [f"uid-standup@{format_time(world.at(30))}"]


async def test_a_bot_that_joined_by_its_safety_net_while_the_operator_was_down_is_followed_not_missed(
    world: World,
) -> None:
    await staged_and_ready(world)
    bot = world.cluster.bot_at("standup")
    await world.until(25)
    await world.stop()
    await world.until(32)
    bot.join(None, by="deadline")  # JOIN_AT + BOT_SELF_JOIN_DELAY_SECONDS
    await world.until(33)
    bot.set("joined")
    await world.until(100)  # past the join deadline (joinAt + 60 s)
    await world.start()
    await world.settle()
    status = world.cluster.status("standup")
    assert status["state"] == "joined"
    assert status["joinedBy"] == "deadline"
    assert status["joinLatenessMs"] == 2000  # when its join started, not its latest state
    assert status["joinedAt"] == format_time(world.at(33))
    assert world.cluster.reasons().count("Joined") == 1
    bot.set("ended", reason="MaxDuration")
    await world.settle()
    assert world.cluster.status("standup")["state"] == "ended"


async def test_a_bot_that_cannot_be_asked_after_a_restart_past_the_deadline_is_missed_with_the_cause(
    world: World,
) -> None:
    await staged_and_ready(world)
    bot = world.cluster.bot_at("standup")
    await world.stop()
    bot.reachable = False
    await world.until(100)
    await world.start()
    await world.settle()
    assert world.cluster.status("standup")["state"] == "staged"  # one failed read is no verdict
    await world.until(103)
    status = world.cluster.status("standup")
    assert status["state"] == "failed"
    assert status["reason"] == "Missed"
    assert "could not be read" in status["message"]


async def test_a_staged_bot_whose_process_died_before_join_at_gets_a_new_pod_and_joins_once(world: World) -> None:
    await staged_and_ready(world)
    old = world.cluster.bot_at("standup")
    await world.until(15)
    world.cluster.crash("standup", code=137)
    await world.until(17)
    assert world.cluster.status("standup")["state"] == "staged"
    assert "PodReplaced" in world.cluster.reasons()
    assert len(world.cluster.pods_created) == 2
    new = world.cluster.ready("standup")
    await world.until(31)
    assert old.requests == []
    assert new.joins == [f"uid-standup@{format_time(world.at(30))}"]
    assert world.cluster.status("standup")["state"] == "joining"


async def test_a_staged_bot_that_dies_before_warming_up_still_fails_bot_exited(world: World) -> None:
    world.add("standup", join_at=30, lead=20)
    await world.until(11)
    world.cluster.crash("standup", code=1)
    await world.settle()
    assert world.cluster.status("standup")["reason"] == "BotExited"
    assert len(world.cluster.pods_created) == 1


async def test_a_meeting_url_edited_while_staged_gets_a_pod_for_the_new_meeting(world: World) -> None:
    await staged_and_ready(world)
    old = world.cluster.bot_at("standup")
    world.cluster.edit_spec("standup", meetingUrl="https://zoom.us/j/987654321")
    await world.until(13)
    assert "PodReplaced" in world.cluster.reasons()
    pod = world.cluster.pod("standup")
    assert pod is not None
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["MEETING_URL"] == "https://zoom.us/j/987654321"
    new = world.cluster.ready("standup")
    await world.until(31)
    assert old.requests == []
    assert new.joins == [f"uid-standup@{format_time(world.at(30))}"]
