"""Command mode: any program becomes a bot by being started at join time.

The lifecycle of the command is the bot's lifecycle:

========================================  ==================================================
command                                   state document
========================================  ==================================================
started                                   ``joined`` (unless ``wait_for_state_line``)
prints ``@state <state> [message...]``    that state, with that message
exits 0                                   ``ended``, ``exitCode: 0``
exits non-zero (or killed by a signal)    ``failed``, reason ``BotExited``, ``exitCode``
exits after a leave was asked for         ``ended`` with the leave's reason and ``exitCode``
========================================  ==================================================

State lines are the one way a command reports states: a line on its stdout
that starts with ``@state``, then a state a bot may report (``waiting_room``,
``joined``, ``recording``, ``leaving``, ``ended``, ``failed``), then an
optional free-text message. State lines are consumed; every other line is
passed through to the agent's stdout. A command killed by signal N gets exit
code 128 + N, the shell's convention, so that the document holds one kind of
number.

Leaving sends SIGTERM to the command (the command itself, not its children:
a shell wrapper should ``exec`` the bot), waits ``grace_period`` seconds, then
sends SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Final, TextIO

from scheduledbot import protocol as p
from scheduledbot.agent.bot import Bot, BotFailure, Meeting
from scheduledbot.timestamps import format_epoch

logger = logging.getLogger(__name__)

STATE_LINE_PREFIX: Final = "@state"
DEFAULT_GRACE_PERIOD_SECONDS: Final = 10.0
#: The agent's own margin over the grace period before it gives up on the session.
_LEAVE_MARGIN_SECONDS: Final = 5.0
#: Longest stdout line the agent reads; a longer one fails the session (the default 64 KiB
#: of asyncio streams is easy to exceed with a JSON log line).
_LINE_LIMIT_BYTES: Final = 1024 * 1024
REASON_BOT_REPORTED: Final = "BotReported"
REASON_COMMAND_NOT_STARTED: Final = "CommandNotStarted"


def parse_state_line(line: str) -> tuple[p.BotState, str] | None:
    """``@state recording Started`` -> ``("recording", "Started")``; None if not a valid state line."""
    words = line.strip().split(maxsplit=2)
    if len(words) < 2 or words[0] != STATE_LINE_PREFIX or words[1] not in p.REPORTABLE_STATES:
        return None
    state: p.BotState = words[1]  # type: ignore[assignment]  # checked against REPORTABLE_STATES
    return state, words[2] if len(words) == 3 else ""


def command_environment(meeting: Meeting, base: dict[str, str]) -> dict[str, str]:
    """The command's environment: the agent's, plus the meeting it joins and how the join came."""
    env = dict(base)
    env[p.ENV_MEETING_URL] = meeting.url
    if meeting.bot_name is not None:
        env[p.ENV_BOT_NAME] = meeting.bot_name
    if meeting.join_at is not None:
        env[p.ENV_JOIN_AT] = format_epoch(meeting.join_at)
    env[p.ENV_BOT_CONFIG] = json.dumps(dict(meeting.config))
    env[p.ENV_JOIN_REQUEST_ID] = meeting.request_id or ""
    env[p.ENV_JOINED_BY] = meeting.joined_by
    return env


class CommandBot(Bot):
    """Runs ``argv`` as the bot: started on join, stopped on leave."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        grace_period: float = DEFAULT_GRACE_PERIOD_SECONDS,
        wait_for_state_line: bool = False,
        output: TextIO | None = None,
    ) -> None:
        super().__init__()
        if not argv:
            raise ValueError("no command to run")
        self._argv = list(argv)
        self._grace_period = grace_period
        self._wait_for_state_line = wait_for_state_line
        self._output = output if output is not None else sys.stdout
        self._process: asyncio.subprocess.Process | None = None
        self._leave_reason: str | None = None
        self.leave_timeout = grace_period + _LEAVE_MARGIN_SECONDS

    async def join(self, meeting: Meeting) -> None:
        if self.leave_requested.is_set():
            return
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                env=command_environment(meeting, dict(os.environ)),
                limit=_LINE_LIMIT_BYTES,
            )
        except OSError as exc:
            raise BotFailure(REASON_COMMAND_NOT_STARTED, f"cannot start {self._argv[0]}: {exc.strerror}") from None
        self._process = process
        logger.info("Started %s (pid %d).", self._argv[0], process.pid)
        try:
            if self.leave_requested.is_set():
                # The leave came while the command was being started; leave() saw no process.
                await self._terminate(process)
            elif not self._wait_for_state_line:
                await self.reporter.report("joined", f"{self._argv[0]} is running")
            await self._read_output(process)
            code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await self._report_exit(code)

    async def leave(self, reason: str) -> None:
        self._leave_reason = reason
        await super().leave(reason)
        if self._process is not None:
            await self._terminate(self._process)

    async def _read_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None  # stdout=PIPE
        async for raw in process.stdout:
            line = raw.decode("utf-8", errors="replace")
            parsed = parse_state_line(line) if line.startswith(STATE_LINE_PREFIX) else None
            if parsed is None:
                self._output.write(line)
                self._output.flush()
                continue
            state, message = parsed
            reason = REASON_BOT_REPORTED if state == "failed" else None
            await self.reporter.report(state, message, reason=reason)

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        logger.info("Sending SIGTERM to pid %d; SIGKILL in %g s.", process.pid, self._grace_period)
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(self._grace_period):
                await process.wait()
        except TimeoutError:
            logger.warning("Pid %d outlived the grace period of %g s: SIGKILL.", process.pid, self._grace_period)
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    async def _report_exit(self, returncode: int) -> None:
        if returncode < 0:
            code = 128 - returncode
            how = f"was killed by {_signal_name(-returncode)} (exit code {code})"
        else:
            code = returncode
            how = f"exited with code {code}"
        message = f"command {how}"
        if self._leave_reason is not None:
            await self.reporter.report("ended", f"left; {message}", reason=self._leave_reason, exit_code=code)
        elif code == 0:
            await self.reporter.report("ended", message, exit_code=code)
        else:
            raise BotFailure(p.REASON_BOT_EXITED, message, exit_code=code)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
