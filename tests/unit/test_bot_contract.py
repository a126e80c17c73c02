"""Bot protocol v1 end to end in one process: the operator's side against the real agent.

The Pod is what `core.children` builds; the agent reads its environment the way
the kubelet would hand it over (field references resolved, the token Secret's
keys as files under the mount path) and serves on loopback. The operator's
client (`adapters.bots`) then signals the join, follows the state, moves the
self-join and asks the bot to leave. Both sides import `scheduledbot.protocol`;
what this test checks is that they also agree on what goes over the socket.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from localcluster.net import free_port
from scheduledbot import protocol
from scheduledbot.adapters.bots import BotClient, BotUnreachable, JoinLine
from scheduledbot.agent import Agent, AgentSettings, Bot, Meeting
from scheduledbot.api.models import BotState, parse_spec
from scheduledbot.core import tokens
from scheduledbot.core.children import build_pod, build_secret, control_port_of, secret_name
from scheduledbot.core.model import BotReport
from scheduledbot.protocol import JoinedBy
from scheduledbot.timestamps import format_time

pytestmark = pytest.mark.timeout(10)

NAME, NAMESPACE, UID = "standup", "team", "uid-1"
#: The operator's key, and what it derives from it: the bot's token and its Secret's name.
KEY = b"k" * tokens.MIN_KEY_BYTES
TOKEN = tokens.bot_token(KEY, namespace=NAMESPACE, name=NAME, uid=UID)
SECRET = secret_name(NAME, tokens.secret_tag(KEY, uid=UID))


class RecordingBot(Bot):
    """Joins at once, reports joined, stays until asked to leave; keeps the meetings it got."""

    def __init__(self) -> None:
        super().__init__()
        self.meetings: list[Meeting] = []

    async def join(self, meeting: Meeting) -> None:
        self.meetings.append(meeting)
        await self.reporter.report("joined", "in the meeting")
        await self.leave_requested.wait()


@dataclass(frozen=True)
class Staged:
    """A running agent started from the operator's Pod, and how the operator reaches it."""

    agent: Agent
    settings: AgentSettings
    bot: RecordingBot
    pod: dict[str, Any]
    address: str
    join_at: datetime


def kubelet_environment(pod: dict[str, Any], secret: dict[str, Any], volumes: Path) -> dict[str, str]:
    """The bot container's environment as the kubelet gives it, the token Secret mounted under `volumes`."""
    [container] = pod["spec"]["containers"]
    fields = {"metadata.name": pod["metadata"]["name"], "status.podIP": "127.0.0.1"}
    env = {
        var["name"]: var["value"] if "value" in var else fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        for var in container["env"]
    }
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v}
    for mount in container["volumeMounts"]:
        assert secrets[mount["name"]] == secret["metadata"]["name"]
        directory = volumes / mount["name"]
        directory.mkdir()
        for key, value in secret["data"].items():
            (directory / key).write_bytes(base64.b64decode(value))
        prefix = mount["mountPath"].rstrip("/") + "/"
        env = {k: str(directory / v[len(prefix) :]) if v.startswith(prefix) else v for k, v in env.items()}
    return env


Stage = Callable[..., Awaitable[Staged]]


@pytest.fixture
async def stage(tmp_path: Path) -> AsyncIterator[Stage]:
    agents: list[Agent] = []

    async def make(*, join_in: float = 3600.0, self_join_delay: float = 2.0) -> Staged:
        join_at = datetime.now(UTC) + timedelta(seconds=join_in)
        spec = parse_spec(
            {
                "meetingUrl": "https://zoom.us/j/123",
                "botName": "Notetaker",
                "joinAt": format_time(join_at),
                "botConfig": {"language": "en"},
            },
            extra_hosts=frozenset(),
        )
        port = free_port()
        template = {
            "spec": {
                "containers": [
                    {
                        "name": "bot",
                        "image": "bot:1",
                        "ports": [{"name": protocol.CONTROL_PORT_NAME, "containerPort": port}],
                    }
                ]
            }
        }
        pod = build_pod(
            name=NAME,
            namespace=NAMESPACE,
            uid=UID,
            spec=spec,
            template=template,
            join_at=spec.join_at,
            join_deadline_seconds=120,
            max_duration_seconds=3600,
            self_join_delay_seconds=self_join_delay,
            token_secret=SECRET,
        )
        secret = build_secret(name=NAME, namespace=NAMESPACE, uid=UID, token=TOKEN, secret=SECRET)
        settings = AgentSettings.from_env(kubelet_environment(pod, secret, tmp_path))
        bot = RecordingBot()
        agent = Agent(bot, settings)
        await agent.start()
        agents.append(agent)
        return Staged(
            agent=agent,
            settings=settings,
            bot=bot,
            pod=pod,
            address=f"127.0.0.1:{control_port_of(pod)}",
            join_at=spec.join_at,
        )

    yield make
    for agent in agents:
        await agent.stop()


@pytest.fixture
async def client() -> AsyncIterator[BotClient]:
    bots = BotClient()
    yield bots
    await bots.close()


async def follow(client: BotClient, address: str, report: BotReport, state: str) -> BotReport:
    """The operator's long-poll, from `report` on, until the bot reports `state`."""
    while report.state != state:
        assert report.state not in protocol.TERMINAL_STATES, f"ended as {report.state}, not {state}"
        report = await client.state(address, TOKEN, after=report.version)
    return report


async def ready(staged: Staged) -> None:
    """What the kubelet's readiness probe asks, until the agent says ready."""
    probe = staged.pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert probe["port"] == protocol.CONTROL_PORT_NAME
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"http://{staged.address}{probe['path']}") as response:
                if response.status == 200:
                    return
            await asyncio.sleep(0.01)


async def test_the_agent_reads_the_pod_the_operator_builds(stage: Stage) -> None:
    staged = await stage(self_join_delay=0.5)
    settings = staged.settings
    assert (settings.meeting_url, settings.bot_name, settings.bot_config) == (
        "https://zoom.us/j/123",
        "Notetaker",
        {"language": "en"},
    )
    assert settings.join_at == staged.join_at.timestamp()
    assert (settings.self_join_delay, settings.join_deadline, settings.max_duration) == (0.5, 120, 3600)
    assert (settings.host, settings.port, settings.pod_name) == ("127.0.0.1", staged.agent.port, f"{NAME}-bot")
    assert settings.token == TOKEN


async def test_the_operator_signals_follows_and_ends_a_bot_the_agent_runs(stage: Stage, client: BotClient) -> None:
    staged = await stage()
    await ready(staged)
    line = JoinLine(
        address=staged.address,
        token=TOKEN,
        request_id="req-1",
        meeting_url="https://zoom.us/j/123",
        bot_name="Notetaker",
        join_at=format_time(staged.join_at),
    )
    await line.open()
    assert line.ready
    line.write()
    joining = await line.answer()
    assert (joining.state, joining.joined_by) == ("joining", JoinedBy.SIGNAL)
    assert joining.since is not None and abs(joining.since - datetime.now(UTC)) < timedelta(seconds=5)

    joined = await follow(client, staged.address, joining, "joined")
    assert (joined.message, joined.joined_by) == ("in the meeting", JoinedBy.SIGNAL)
    [meeting] = staged.bot.meetings
    assert (meeting.url, meeting.bot_name, meeting.request_id) == ("https://zoom.us/j/123", "Notetaker", "req-1")
    assert (meeting.join_at, meeting.config) == (staged.join_at.timestamp(), {"language": "en"})

    leaving = await client.leave(staged.address, TOKEN, reason="ScheduledBotDeleted")
    assert leaving.state == "leaving"
    ended = await follow(client, staged.address, leaving, "ended")
    assert ended.reason == "ScheduledBotDeleted"
    assert BotState(ended.state).is_terminal


async def test_a_moved_join_time_reaches_the_bots_safety_net(stage: Stage, client: BotClient) -> None:
    staged = await stage(self_join_delay=0.1)
    await ready(staged)
    soon = datetime.now(UTC) + timedelta(seconds=0.3)
    moved = await client.move_self_join(staged.address, TOKEN, join_at=soon)
    assert moved.state == "ready" and moved.joined_by is None
    joining = await follow(client, staged.address, moved, "joined")
    assert joining.joined_by is JoinedBy.DEADLINE
    [meeting] = staged.bot.meetings
    assert meeting.join_at == pytest.approx(soon.timestamp(), abs=0.001)


async def test_a_wrong_token_is_refused_with_the_cause(stage: Stage, client: BotClient) -> None:
    staged = await stage()
    with pytest.raises(BotUnreachable, match="answered 401"):
        await client.state(staged.address, "not-the-token", after=0)


def test_every_state_a_bot_reports_is_a_scheduledbot_state() -> None:
    reported = protocol.ALL_STATES - {"ready"}  # the agent's own; the operator calls it staged
    assert reported <= {state.value for state in BotState}
    assert reported >= protocol.REPORTABLE_STATES
    assert reported >= protocol.TERMINAL_STATES | protocol.IN_MEETING_STATES
