"""The demo bot against the local meeting server, both in-process, on virtual loop time.

The agent's and the meeting server's wall clocks are both ``T0 + loop.time()``,
so an arrival stamp can be compared with the join instant exactly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from looptime import LoopTimeProxy

from agent_states import until
from localcluster.meeting import MeetingServer, MeetingServerProcess
from localcluster.net import free_port
from scheduledbot.agent import Agent, AgentSettings
from scheduledbot.demo_bot import DemoBot
from scheduledbot.protocol import JoinRequest, StateDoc

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z
TOKEN = "s3cret-token"

Setup = Callable[..., Awaitable[tuple[Agent, MeetingServer]]]


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    """A meeting server and an agent running the demo bot, created inside the test (virtual clocks)."""
    started: list[Agent | MeetingServer] = []

    async def make(
        meeting_id: str = "standup", *, waiting_room: bool = False, **overrides: Any
    ) -> tuple[Agent, MeetingServer]:
        loop = asyncio.get_running_loop()
        clock = lambda: T0 + loop.time()  # noqa: E731
        server = MeetingServer(clock=clock)
        await server.start()
        started.append(server)
        server.create_meeting(meeting_id, waiting_room=waiting_room)
        options: dict[str, Any] = {
            "token": TOKEN,
            "host": "127.0.0.1",
            "port": 0,
            "meeting_url": server.meeting_url(meeting_id),
            "bot_name": "Notetaker",
            "bot_config": {"recordingDelaySeconds": 3},
            "linger": 0,
        }
        options.update(overrides)
        agent = Agent(DemoBot(options["bot_config"]), AgentSettings(**options), clock=clock)
        await agent.start()
        started.append(agent)
        return agent, server

    yield make
    for thing in reversed(started):
        await thing.stop()


def join(agent: Agent) -> StateDoc:
    return agent.request_join(JoinRequest(request_id="req-1"))


pytestmark = [pytest.mark.looptime(end=3600), pytest.mark.timeout(10)]


async def test_the_arrival_is_stamped_at_the_join_instant(setup: Setup, looptime: LoopTimeProxy) -> None:
    agent, server = await setup()
    await asyncio.sleep(42)
    join(agent)
    doc = await until(agent, "joined")
    assert doc.since == T0 + 42
    arrivals = server.snapshot("standup")["arrivals"]
    assert [(a["name"], a["timestamp"]) for a in arrivals] == [("Notetaker", T0 + 42)]
    doc = await until(agent, "recording")
    assert looptime == 45  # recordingDelaySeconds after joining


async def test_a_waiting_room_then_admission(setup: Setup, looptime: LoopTimeProxy) -> None:
    agent, server = await setup(waiting_room=True)
    join(agent)
    doc = await until(agent, "waiting_room")
    assert doc.message == "waiting for the host to admit me"
    await asyncio.sleep(100)  # longer than the bot's long-poll: it re-polls, and stays waiting
    assert agent.state.doc.state == "waiting_room"
    assert server.admit("standup", name="Notetaker")
    doc = await until(agent, "joined")
    assert doc.since == T0 + 100


async def test_the_end_of_the_meeting_ends_the_bot(setup: Setup) -> None:
    agent, server = await setup()
    join(agent)
    await until(agent, "recording")
    server.end("standup")
    doc = await until(agent, "ended")
    assert (doc.reason, doc.message) == ("MeetingEnded", "the meeting ended")
    assert [d["cause"] for d in server.snapshot("standup")["departures"]] == ["meetingEnded"]
    assert await agent.wait() == 0


async def test_a_leave_records_a_departure(setup: Setup, looptime: LoopTimeProxy) -> None:
    agent, server = await setup()
    join(agent)
    await until(agent, "recording")
    await asyncio.sleep(10)
    agent.request_leave("ScheduledBotDeleted")
    doc = await until(agent, "ended")
    assert doc.reason == "ScheduledBotDeleted"
    departures = server.snapshot("standup")["departures"]
    assert [(d["name"], d["cause"], d["timestamp"]) for d in departures] == [
        ("Notetaker", "left", T0 + float(looptime))
    ]


async def test_max_duration_makes_the_bot_leave(setup: Setup, looptime: LoopTimeProxy) -> None:
    agent, server = await setup(max_duration=120.0)
    join(agent)
    doc = await until(agent, "ended")
    assert looptime == 120 and doc.reason == "MaxDuration"
    assert [d["cause"] for d in server.snapshot("standup")["departures"]] == ["left"]


async def test_a_meeting_that_has_ended_refuses_the_join(setup: Setup) -> None:
    agent, server = await setup()
    server.end("standup")
    join(agent)
    doc = await until(agent, "failed")
    assert doc.reason == "JoinRefused" and "410" in doc.message


async def test_an_unreachable_meeting_server_fails_the_join_after_quick_retries(
    setup: Setup, looptime: LoopTimeProxy
) -> None:
    closed_url = f"http://127.0.0.1:{free_port()}/m/gone"  # nothing listens there
    agent, _ = await setup(meeting_url=closed_url)
    join(agent)
    doc = await until(agent, "failed")
    assert doc.reason == "JoinFailed" and "after 5 attempts" in doc.message
    assert looptime == pytest.approx(3.7)  # 0.2 + 0.5 + 1 + 2 of back-off


async def test_the_warm_up_delays_readiness(setup: Setup, looptime: LoopTimeProxy) -> None:
    agent, _ = await setup(bot_config={"warmupSeconds": 5})
    await asyncio.sleep(4.9)
    assert not agent.ready
    await asyncio.sleep(0.2)
    assert agent.ready


# -- as the Pod runs it: python -m scheduledbot.demo_bot -------------------------------------------


@pytest.mark.looptime(False)
@pytest.mark.timeout(20)
async def test_the_module_runs_as_a_pod_command_and_leaves_on_sigterm(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    port = free_port()
    with MeetingServerProcess() as meetings:
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "operator"),
            "BOT_TOKEN_FILE": str(token_file),
            "POD_IP": "127.0.0.1",
            "BOT_CONTROL_PORT": str(port),
            "MEETING_URL": meetings.meeting_url("demo"),
            "BOT_NAME": "Demo Bot",
            "BOT_CONFIG": '{"recordingDelaySeconds": 0.1}',
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scheduledbot.demo_bot", stderr=asyncio.subprocess.PIPE, env=env
        )
        assert process.stderr is not None
        try:
            async with asyncio.timeout(10):
                while b"Serving the bot control API" not in await process.stderr.readline():
                    pass
                base = f"http://127.0.0.1:{port}"
                async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                    async with http.post(f"{base}/v1/join", json={"requestId": "r"}) as response:
                        doc = await response.json()
                    while doc["state"] != "recording":
                        params = {"after": doc["version"], "timeout": 5}
                        async with http.get(f"{base}/v1/state", params=params) as response:
                            doc = await response.json()
                process.send_signal(signal.SIGTERM)
                await process.communicate()
            assert process.returncode == 0
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{meetings.base_url}/admin/meetings/demo") as response,
            ):
                meeting = await response.json()
            assert [(d["name"], d["cause"]) for d in meeting["departures"]] == [("Demo Bot", "left")]
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
