"""A bot Pod that answers the operator in bad faith: huge, deep, malformed, or with text meant to forge.

Real sockets on 127.0.0.1 (a bot is a server the operator dials); each test bounds its
own time. What must hold: the operator reads a bounded amount whatever the bot sends,
a bad answer is `BotUnreachable` (never another exception that would fail the pass),
and what does reach status is valid for the CRD and free of control characters.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from aiohttp import web

from scheduledbot.adapters.bots import MAX_ANSWER_BYTES, BotClient, BotUnreachable, JoinLine, parse_report
from scheduledbot.api.models import ScheduledBotStatus
from scheduledbot.api.states import BotState
from scheduledbot.core.model import BotView, Defaults, Observed, PodView
from scheduledbot.core.plan import plan

HUGE = 400 * 1024 * 1024
CHUNK = b"x" * (1 << 20)


class Hostile:
    """A bot's control server on a free loopback port, answering with `handler`; counts what it sent."""

    def __init__(self, handler: Callable[[web.Request, Hostile], Awaitable[web.StreamResponse]]) -> None:
        self.handler = handler
        self.sent = 0
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await self.handler(request, self)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Hostile], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(bot: Hostile) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", bot.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        bot.port = runner.addresses[0][1]
        return f"127.0.0.1:{bot.port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def stream_forever(request: web.Request, bot: Hostile, *, declare: bool) -> web.StreamResponse:
    """400 MB of body, with or without saying so in Content-Length."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    if declare:
        response.content_length = HUGE
    await response.prepare(request)
    try:
        while bot.sent < HUGE:
            await response.write(CHUNK)
            bot.sent += len(CHUNK)
    except (ConnectionError, RuntimeError):
        pass  # the operator hung up
    return response


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "no-length"])
async def test_a_400_mb_state_answer_is_refused_after_a_bounded_read(
    serve: Callable[[Hostile], Awaitable[str]], declare: bool
) -> None:
    bot = Hostile(lambda request, b: stream_forever(request, b, declare=declare))
    address = await serve(bot)
    client = BotClient()
    try:
        with pytest.raises(BotUnreachable, match="bytes"):
            await asyncio.wait_for(client.state(address, "t", after=0), timeout=20)
    finally:
        await client.close()
    await asyncio.sleep(0.05)
    # What the bot could push before the operator hung up: socket buffers, not the 400 MB.
    assert bot.sent < 32 * 1024 * 1024


async def test_a_join_answer_that_claims_400_mb_is_refused_unread(
    serve: Callable[[Hostile], Awaitable[str]],
) -> None:
    bot = Hostile(lambda request, b: stream_forever(request, b, declare=True))
    address = await serve(bot)
    line = JoinLine(address=address, token="t", request_id="r", meeting_url="https://x", bot_name="B", join_at="x")
    await line.open()
    line.write()
    with pytest.raises(BotUnreachable, match=str(MAX_ANSWER_BYTES)):
        await asyncio.wait_for(line.answer(), timeout=20)


async def test_a_flood_of_headers_is_refused(serve: Callable[[Hostile], Awaitable[str]]) -> None:
    async def headers(request: web.Request, bot: Hostile) -> web.StreamResponse:
        body = document(state="joined")
        return web.Response(body=body, headers={f"X-Flood-{i}": "y" * 100 for i in range(200)})

    address = await serve(Hostile(headers))
    client = BotClient()
    try:
        with pytest.raises(BotUnreachable):
            await asyncio.wait_for(client.state(address, "t", after=0), timeout=20)
    finally:
        await client.close()


def document(**fields: object) -> bytes:
    return json.dumps({"version": 4, "state": "failed", "since": "2026-01-01T00:00:00Z", **fields}).encode()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "deep"),
        (b"not json", "garbage"),
        (document(state="scheduled"), "a state bots do not report"),
        (document(version="4"), "a string version"),
        (document(since="yesterday"), "a since that is no time"),
        (document(exitCode=2**40), "an exit code out of range"),
        (b"x" * (MAX_ANSWER_BYTES + 1), "too large"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_answers_that_are_not_state_documents_are_bot_unreachable(body: bytes, why: str) -> None:
    with pytest.raises(BotUnreachable):
        parse_report(body)


def test_a_newline_escape_or_bidi_override_in_the_message_cannot_forge_a_line() -> None:
    report = parse_report(document(message="ok\n2026-01-01 INFO forged line\x1b[2J\u202eevil"))
    assert "\n" not in report.message and "\x1b" not in report.message and "\u202e" not in report.message
    assert "\\u000a" in report.message and "forged line" in report.message


def test_a_huge_message_is_cut() -> None:
    report = parse_report(document(message="m" * 60_000))
    assert len(report.message) <= 1024


def failed_status(report_body: bytes) -> ScheduledBotStatus:
    """The status a pass would write after the bot reports it failed while in the meeting."""
    report = parse_report(report_body)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    bot = BotView(
        name="b",
        namespace="n",
        uid="u",
        generation=1,
        created_at=now,
        deleted_at=None,
        has_finalizer=True,
        spec=None,
        spec_error=None,
        status=ScheduledBotStatus(state=BotState.JOINED, reason="Joined", message="in"),
    )
    pod = PodView(name="b-bot", uid="p", phase="Running", ready=True, ip="127.0.0.2", deleting=False)
    decided = plan(bot=bot, observed=Observed(pod=pod, secret=True, report=report), defaults=Defaults(), now=now)
    # The CRD's own rules for status (pattern and lengths), as the API server applies them.
    return ScheduledBotStatus.model_validate(decided.status.model_dump(by_alias=True, exclude_none=True))


@pytest.mark.parametrize(
    "reason",
    ["R" * 2000, "not a reason", "Bad\nReason", "Reason\u202e", "x" * 65],
    ids=["2000-chars", "spaces", "newline", "bidi", "65-chars"],
)
def test_a_reason_the_status_would_refuse_goes_into_the_message_so_the_pass_succeeds(reason: str) -> None:
    status = failed_status(document(reason=reason, message="gave up"))
    assert status.state is BotState.FAILED
    assert status.reason == "BotFailed"
    assert status.message is not None and "gave up" in status.message and "\n" not in status.message


def test_a_proper_reason_is_kept() -> None:
    assert failed_status(document(reason="MeetingLocked", message="locked")).reason == "MeetingLocked"
