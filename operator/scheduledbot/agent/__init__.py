"""The in-pod side of the bot protocol (docs/bot-protocol.md), for Python bots and any command.

A Python bot subclasses :class:`Bot` and is run with :func:`run_bot`::

    class MyBot(Bot):
        async def prepare(self) -> None:          # warm-up; the Pod is ready after it
            ...
        async def join(self, meeting: Meeting) -> None:
            ...                                    # join meeting.url
            await self.reporter.report("joined")
            await self.leave_requested.wait()      # or until the meeting ends
            ...                                    # leave

    sys.exit(run_bot(MyBot()))

Any other program is wrapped by the ``scheduledbot-agent`` command
(:mod:`scheduledbot.agent.cli`, built on :class:`CommandBot`).

Modules: ``state`` (the state holder),
``settings`` (the Pod environment), ``server`` (the HTTP control API), ``bot``
(the bot API), ``runtime`` (the agent: safety net, max duration, SIGTERM),
``command`` and ``cli`` (command mode). The wire names and documents are
:mod:`scheduledbot.protocol`, which the operator imports too.
"""

from scheduledbot.agent.bot import Bot, BotFailure, Meeting, StateReporter
from scheduledbot.agent.command import CommandBot
from scheduledbot.agent.runtime import Agent, run_bot
from scheduledbot.agent.settings import AgentSettings, SettingsError
from scheduledbot.protocol import BotState, StateDoc

__all__ = [
    "Agent",
    "AgentSettings",
    "Bot",
    "BotFailure",
    "BotState",
    "CommandBot",
    "Meeting",
    "SettingsError",
    "StateDoc",
    "StateReporter",
    "run_bot",
]
