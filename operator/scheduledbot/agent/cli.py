"""``scheduledbot-agent``: serve the bot protocol for any command.

Usage::

    scheduledbot-agent [--self-join-delay S] [--grace-period S]
                       [--wait-for-state-line] [--linger S] -- my-bot --flag

The Pod environment (docs/bot-protocol.md) says what to join and when; the
command is started at the join (see :mod:`scheduledbot.agent.command` for how
its lifecycle and its ``@state`` lines map to states).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from scheduledbot import protocol as p
from scheduledbot.agent.command import DEFAULT_GRACE_PERIOD_SECONDS, CommandBot
from scheduledbot.agent.runtime import run_bot
from scheduledbot.agent.settings import DEFAULT_LINGER_SECONDS, AgentSettings, SettingsError

_EPILOG = """\
The command gets the meeting in its environment: MEETING_URL, BOT_NAME, JOIN_AT,
BOT_CONFIG, JOIN_REQUEST_ID (empty when joined by deadline) and JOINED_BY
(signal or deadline). It may report states by printing lines of the form

    @state <state> [message...]

e.g. "@state waiting_room Waiting for the host" or "@state recording", where
<state> is one of waiting_room, joined, recording, leaving, ended, failed.
Other lines are passed through. Exit 0 means ended; any other exit means
failed (reason BotExited, "command exited with code N").
The protocol is described in docs/bot-protocol.md.
"""


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scheduledbot-agent",
        description="Run COMMAND as a meeting bot behind the scheduledbot control API "
        f"(bot protocol {p.PROTOCOL_VERSION}): start it when the operator signals the join, "
        "or on its own shortly after JOIN_AT if no signal comes.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [options] -- COMMAND [ARG...]",
    )
    parser.add_argument(
        "--self-join-delay",
        type=_seconds,
        metavar="S",
        help=f"join on my own this long after JOIN_AT if no signal came "
        f"(default: ${p.ENV_BOT_SELF_JOIN_DELAY_SECONDS}, else {p.DEFAULT_SELF_JOIN_DELAY_SECONDS:g})",
    )
    parser.add_argument(
        "--grace-period",
        type=_seconds,
        metavar="S",
        default=DEFAULT_GRACE_PERIOD_SECONDS,
        help="on leave, SIGTERM the command and SIGKILL it after this long (default: %(default)g)",
    )
    parser.add_argument(
        "--wait-for-state-line",
        action="store_true",
        help="stay 'joining' until the command prints a state line, instead of reporting 'joined' when it starts",
    )
    parser.add_argument(
        "--linger",
        type=_seconds,
        metavar="S",
        default=DEFAULT_LINGER_SECONDS,
        help="after the end, serve the final state until the operator read it, "
        "but at most this long (default: %(default)g)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given (put it after --)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = AgentSettings.from_env()
    except SettingsError as exc:
        print(f"scheduledbot-agent: {exc}", file=sys.stderr)
        return 2
    settings = dataclasses.replace(
        settings,
        linger=args.linger,
        self_join_delay=settings.self_join_delay if args.self_join_delay is None else args.self_join_delay,
    )
    bot = CommandBot(args.command, grace_period=args.grace_period, wait_for_state_line=args.wait_for_state_line)
    return run_bot(bot, settings)


if __name__ == "__main__":
    sys.exit(main())
