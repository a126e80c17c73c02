"""Command mode with real subprocesses (tiny Python commands): real time, each test a few seconds at most.

Virtual time cannot be used here: while the loop waits for a child process,
looptime would fast-forward to the next timer (e.g. the grace period).
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent_states import until
from localcluster.net import free_port
from scheduledbot.agent import Agent, AgentSettings, CommandBot, Meeting, StateReporter
from scheduledbot.agent.command import command_environment, parse_state_line
from scheduledbot.protocol import BotState, JoinedBy, JoinRequest, StateDoc

pytestmark = pytest.mark.timeout(20)

TOKEN = "s3cret-token"
MEETING_URL = "https://meet.google.com/abc-defg-hij"
OPERATOR_SOURCE = str(Path(__file__).resolve().parents[2] / "operator")


class RecordingReporter(StateReporter):
    """Remembers every report, so a test sees states that were quickly replaced."""

    def __init__(self, agent: Agent) -> None:
        super().__init__(agent.state)
        self.reports: list[tuple[str, str, dict[str, Any]]] = []

    async def report(self, state: BotState, message: str = "", **details: Any) -> bool:
        self.reports.append((state, message, {k: v for k, v in details.items() if v is not None}))
        return await super().report(state, message, **details)


def python(script: str) -> list[str]:
    return [sys.executable, "-u", "-c", textwrap.dedent(script)]


async def run_command(
    script: str, *, leave_when: BotState | None = None, grace_period: float = 5.0, wait_for_state_line: bool = False
) -> tuple[StateDoc, RecordingReporter, str]:
    """Join with ``script`` as the bot; optionally leave once it reports ``leave_when``."""
    output = io.StringIO()
    bot = CommandBot(python(script), grace_period=grace_period, wait_for_state_line=wait_for_state_line, output=output)
    agent = Agent(bot, AgentSettings(token=TOKEN, host="127.0.0.1", port=0, meeting_url=MEETING_URL, linger=0))
    recorder = RecordingReporter(agent)
    bot.attach(recorder)
    await agent.start()
    try:
        agent.request_join(_join_request())
        doc = agent.state.doc
        async with asyncio.timeout(10):
            while not doc.terminal:
                if doc.state == leave_when:
                    agent.request_leave("ScheduledBotDeleted")
                doc = await agent.state.wait_after(doc.version, None)
    finally:
        await agent.stop()
    return doc, recorder, output.getvalue()


def _join_request() -> JoinRequest:
    return JoinRequest(request_id="req-7", meeting_url=MEETING_URL, bot_name="Notetaker")


# -- pure pieces ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("@state recording\n", ("recording", "")),
        ("@state waiting_room Waiting for the host\n", ("waiting_room", "Waiting for the host")),
        ("@state failed   camera  is off \r\n", ("failed", "camera  is off")),
        ("@state joining\n", None),  # the agent's own state
        ("@state\n", None),
        ("@states recording\n", None),
        ("hello @state recording\n", None),
    ],
)
def test_state_lines(line: str, expected: tuple[str, str] | None) -> None:
    assert parse_state_line(line) == expected


def test_the_command_gets_the_meeting_and_how_it_was_joined_in_its_environment() -> None:
    meeting = Meeting(
        url=MEETING_URL,
        bot_name="Notetaker",
        join_at=1_750_000_000.0,
        config={"a": 1},
        request_id=None,
        joined_by=JoinedBy.DEADLINE,
    )
    env = command_environment(meeting, {"PATH": "/bin"})
    assert env == {
        "PATH": "/bin",
        "MEETING_URL": MEETING_URL,
        "BOT_NAME": "Notetaker",
        "JOIN_AT": "2025-06-15T15:06:40Z",
        "BOT_CONFIG": '{"a": 1}',
        "JOIN_REQUEST_ID": "",
        "JOINED_BY": "deadline",
    }


# -- lifecycle ------------------------------------------------------------------------------------------


async def test_state_lines_are_reported_and_other_lines_pass_through() -> None:
    doc, recorder, output = await run_command(
        """
        import os
        print("hello from", os.environ["MEETING_URL"], os.environ["JOIN_REQUEST_ID"], os.environ["JOINED_BY"])
        print("@state waiting_room Waiting for the host")
        print("@state recording")
        print("@state bogus not a state")
        """
    )
    assert [(state, message) for state, message, _ in recorder.reports] == [
        ("joined", f"{sys.executable} is running"),
        ("waiting_room", "Waiting for the host"),
        ("recording", ""),
        ("ended", "command exited with code 0"),
    ]
    assert output == f"hello from {MEETING_URL} req-7 signal\n@state bogus not a state\n"
    assert (doc.state, doc.exit_code, doc.message) == ("ended", 0, "command exited with code 0")


async def test_with_wait_for_state_line_the_command_decides_when_it_is_joined() -> None:
    _, recorder, _ = await run_command('print("@state waiting_room")\nprint("@state joined")', wait_for_state_line=True)
    assert [state for state, _, _ in recorder.reports] == ["waiting_room", "joined", "ended"]


async def test_a_non_zero_exit_fails_with_the_exit_code() -> None:
    doc, _, _ = await run_command("import sys; sys.exit(3)")
    assert (doc.state, doc.reason, doc.exit_code) == ("failed", "BotExited", 3)
    assert "command exited with code 3" in doc.message


async def test_a_command_killed_by_a_signal_fails_with_128_plus_the_signal() -> None:
    doc, _, _ = await run_command("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert (doc.state, doc.reason, doc.exit_code) == ("failed", "BotExited", 137)
    assert "SIGKILL" in doc.message


async def test_a_command_that_cannot_start_fails() -> None:
    bot = CommandBot(["/nonexistent/bot"])
    agent = Agent(bot, AgentSettings(token=TOKEN, host="127.0.0.1", port=0, meeting_url=MEETING_URL, linger=0))
    await agent.start()
    try:
        agent.request_join(_join_request())
        async with asyncio.timeout(5):
            doc = await until(agent, "failed")
    finally:
        await agent.stop()
    assert (doc.state, doc.reason) == ("failed", "CommandNotStarted")


async def test_a_leave_sends_sigterm_and_the_command_ends() -> None:
    doc, _, output = await run_command(
        """
        import signal, sys, time
        def bye(signum, frame):
            print("got SIGTERM")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("@state recording")
        time.sleep(30)
        """,
        leave_when="recording",
    )
    assert output == "got SIGTERM\n"
    assert (doc.state, doc.reason, doc.exit_code) == ("ended", "ScheduledBotDeleted", 0)


async def test_a_command_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    started = time.monotonic()
    doc, _, _ = await run_command(
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("@state recording")
        time.sleep(30)
        """,
        leave_when="recording",
        grace_period=0.5,
    )
    assert (doc.state, doc.reason, doc.exit_code) == ("ended", "ScheduledBotDeleted", 137)
    assert "SIGKILL" in doc.message
    assert 0.5 <= time.monotonic() - started < 5


# -- the console script ---------------------------------------------------------------------------------


def _agent_env(tmp_path: Path, port: int) -> dict[str, str]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    return {
        **os.environ,
        "PYTHONPATH": OPERATOR_SOURCE,
        "BOT_TOKEN_FILE": str(token_file),
        "POD_IP": "127.0.0.1",
        "BOT_CONTROL_PORT": str(port),
        "MEETING_URL": MEETING_URL,
    }


async def test_help() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scheduledbot.agent.cli", "--help",
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": OPERATOR_SOURCE},
    )  # fmt: skip
    stdout, _ = await process.communicate()
    assert process.returncode == 0
    assert b"scheduledbot-agent [options] -- COMMAND" in stdout and b"@state <state> [message...]" in stdout


SIGTERM_RECORDER = """
    import signal, sys, time
    signal.signal(signal.SIGTERM, lambda *_: (print("bye"), sys.exit(0)))
    print("@state recording")
    time.sleep(30)
"""


@pytest.fixture
async def agent_process(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``scheduledbot-agent`` wrapping a command that records SIGTERM; yields it and its base URL."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scheduledbot.agent.cli", "--grace-period", "5", "--", *python(SIGTERM_RECORDER),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_agent_env(tmp_path, port),
    )  # fmt: skip
    assert process.stderr is not None
    try:
        async with asyncio.timeout(10):
            while b"Serving the bot control API" not in await process.stderr.readline():
                pass
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_console_script_joins_on_signal_and_leaves_on_sigterm(
    agent_process: tuple[asyncio.subprocess.Process, str],
) -> None:
    process, base_url = agent_process
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{base_url}/v1/ready") as response:
            assert response.status == 200
        async with http.post(f"{base_url}/v1/join", json={"requestId": "req-1", "meetingUrl": MEETING_URL}) as response:
            assert (await response.json())["state"] == "joining"
        version = 2
        async with asyncio.timeout(10):
            while True:
                async with http.get(f"{base_url}/v1/state", params={"after": version, "timeout": 5}) as response:
                    doc = await response.json()
                version = doc["version"]
                if doc["state"] == "recording":
                    break
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        stdout, _ = await process.communicate()
    assert process.returncode == 0
    assert stdout == b"bye\n"
