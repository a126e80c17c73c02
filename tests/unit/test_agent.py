"""The agent behind its HTTP control API, on virtual loop time (looptime): nothing sleeps for real.

The agent's wall clock is tied to the loop's clock (``T0 + loop.time()``), so
that ``JOIN_AT`` and the ``since`` stamps move with virtual time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from looptime import LoopTimeProxy

from agent_states import until
from scheduledbot.agent import Agent, AgentSettings, Bot, BotFailure, Meeting
from scheduledbot.agent.server import MAX_CONNECTIONS, MIN_IDLE_SECONDS, idle_timeout_for
from scheduledbot.protocol import JoinedBy

pytestmark = [pytest.mark.looptime(end=3600), pytest.mark.timeout(10)]

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z
TOKEN = "s3cret-token"
MEETING_URL = "https://zoom.us/j/123"


class FakeBot(Bot):
    """Joins at once, stays until asked to leave; warm-up waits for ``warm``."""

    def __init__(self, *, warm: bool = True, fail_with: Exception | None = None) -> None:
        super().__init__()
        self.warm = asyncio.Event()
        if warm:
            self.warm.set()
        self.fail_with = fail_with
        self.joins: list[Meeting] = []
        self.leaves: list[str] = []

    async def prepare(self) -> None:
        await self.warm.wait()

    async def join(self, meeting: Meeting) -> None:
        self.joins.append(meeting)
        if self.fail_with is not None:
            raise self.fail_with
        await self.reporter.report("joined", "in")
        await self.leave_requested.wait()

    async def leave(self, reason: str) -> None:
        self.leaves.append(reason)
        await super().leave(reason)


class FailingPrepareBot(FakeBot):
    async def prepare(self) -> None:
        raise RuntimeError("no browser")


MakeAgent = Callable[..., Awaitable[Agent]]


@pytest.fixture
async def make_agent() -> AsyncIterator[MakeAgent]:
    """Agents created inside the test (so their clocks read virtual time), stopped after it."""
    agents: list[Agent] = []

    async def make(bot: Bot | None = None, **overrides: Any) -> Agent:
        loop = asyncio.get_running_loop()
        options: dict[str, Any] = {
            "token": TOKEN,
            "host": "127.0.0.1",
            "port": 0,
            "meeting_url": MEETING_URL,
            "bot_name": "Notetaker",
        }
        options.update(overrides)
        agent = Agent(bot or FakeBot(), AgentSettings(**options), clock=lambda: T0 + loop.time())
        await agent.start()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        await agent.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    agent: Agent,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    json: Any = None,
    params: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    url = f"http://127.0.0.1:{agent.port}{path}"
    async with http.request(method, url, headers=headers, json=json, params=params) as response:
        return response.status, await response.json()


JOIN = {"requestId": "req-1", "meetingUrl": MEETING_URL, "botName": "Notetaker", "joinAt": "2025-06-15T15:06:40Z"}


# -- readiness and join -------------------------------------------------------------------------


async def test_readiness_answers_503_until_the_warm_up_is_done(
    make_agent: MakeAgent, http: aiohttp.ClientSession
) -> None:
    bot = FakeBot(warm=False)
    agent = await make_agent(bot)
    assert await call(http, agent, "GET", "/v1/ready", token=None) == (503, {"ready": False})
    bot.warm.set()
    await asyncio.sleep(0)
    assert await call(http, agent, "GET", "/v1/ready", token=None) == (200, {"ready": True})


async def test_a_join_answers_at_once_with_the_joining_document(
    make_agent: MakeAgent, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    bot = FakeBot()
    agent = await make_agent(bot)
    await asyncio.sleep(10)
    status, body = await call(http, agent, "POST", "/v1/join", json=JOIN)
    assert status == 200
    assert body == {
        "protocol": "v1",
        "version": 2,
        "state": "joining",
        "since": "2025-06-15T15:06:50Z",
        "message": f"joining {MEETING_URL}",
        "reason": None,
        "joinedBy": "signal",
        "requestId": "req-1",
        "exitCode": None,
        "joinStartedAt": "2025-06-15T15:06:50Z",
    }
    await until(agent, "joined")
    assert bot.joins == [
        Meeting(url=MEETING_URL, bot_name="Notetaker", join_at=T0, request_id="req-1", joined_by=JoinedBy.SIGNAL)
    ]


async def test_a_second_join_changes_nothing_and_gets_the_same_answer(
    make_agent: MakeAgent, http: aiohttp.ClientSession
) -> None:
    bot = FakeBot(warm=False)  # so that the first join stays in `joining`
    agent = await make_agent(bot)
    first = await call(http, agent, "POST", "/v1/join", json=JOIN)
    second = await call(http, agent, "POST", "/v1/join", json={**JOIN, "requestId": "req-2"})
    assert second == first
    assert second[1]["requestId"] == "req-1"
    bot.warm.set()
    await until(agent, "joined")
    assert len(bot.joins) == 1


async def test_the_bot_joins_only_after_its_warm_up(make_agent: MakeAgent, http: aiohttp.ClientSession) -> None:
    bot = FakeBot(warm=False)
    agent = await make_agent(bot)
    await call(http, agent, "POST", "/v1/join", json=JOIN)
    await asyncio.sleep(5)
    assert bot.joins == [] and agent.state.doc.state == "joining"
    bot.warm.set()
    await until(agent, "joined")


@pytest.mark.looptime(end=10_000)
async def test_a_connection_opened_while_staged_still_carries_the_join_two_hours_later(
    make_agent: MakeAgent, looptime: LoopTimeProxy
) -> None:
    connections: list[str] = []
    tracing = aiohttp.TraceConfig()
    tracing.on_connection_create_end.append(lambda *_: _record(connections, "new"))
    tracing.on_connection_reuseconn.append(lambda *_: _record(connections, "reused"))
    # Idle connections are kept through the join deadline: the operator's waits for joinAt.
    agent = await make_agent(join_at=T0 + 7300, join_deadline=120.0)
    connector = aiohttp.TCPConnector(limit=1, keepalive_timeout=10_000)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[tracing]) as staged:
        assert (await call(staged, agent, "GET", "/v1/ready", token=None))[0] == 200
        await asyncio.sleep(7200)  # longer than aiohttp's default server keep-alive (3630 s)
        status, answer = await call(staged, agent, "POST", "/v1/join", json=JOIN)
    assert (status, answer["state"]) == (200, "joining")
    assert connections == ["new", "reused"]


async def _record(log: list[str], what: str) -> None:
    log.append(what)


@pytest.mark.parametrize("token", [None, "wrong-token", ""], ids=["no-token", "wrong-token", "empty-token"])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("POST", "/v1/join", JOIN), ("POST", "/v1/leave", {"reason": "x"}), ("GET", "/v1/state", None)],
    ids=["join", "leave", "state"],
)
async def test_calls_without_the_right_token_get_401_and_change_nothing(
    make_agent: MakeAgent,
    http: aiohttp.ClientSession,
    token: str | None,
    method: str,
    path: str,
    body: Any,
) -> None:
    bot = FakeBot()
    agent = await make_agent(bot)
    before = agent.state.doc
    status, answer = await call(http, agent, method, path, token=token, json=body)
    assert status == 401
    assert set(answer) == {"error"}
    await asyncio.sleep(1)
    assert agent.state.doc == before
    assert bot.joins == [] and bot.leaves == []


async def test_a_basic_auth_header_is_not_a_bearer_token(make_agent: MakeAgent, http: aiohttp.ClientSession) -> None:
    agent = await make_agent()
    url = f"http://127.0.0.1:{agent.port}/v1/state"
    async with http.get(url, headers={"Authorization": f"Basic {TOKEN}"}) as response:
        assert response.status == 401


@pytest.mark.parametrize(
    "body",
    [{"meetingUrl": MEETING_URL}, {"requestId": "r", "joinAt": "tomorrow"}, ["requestId"]],
    ids=["no-request-id", "bad-join-at", "not-an-object"],
)
async def test_a_malformed_join_gets_400_and_changes_nothing(
    make_agent: MakeAgent, http: aiohttp.ClientSession, body: Any
) -> None:
    agent = await make_agent()
    status, answer = await call(http, agent, "POST", "/v1/join", json=body)
    assert status == 400 and "error" in answer
    assert agent.state.doc.version == 1


# -- the safety net ---------------------------------------------------------------------------


async def test_without_a_signal_the_bot_joins_on_its_own_at_join_at_plus_the_delay(
    make_agent: MakeAgent, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    bot = FakeBot()
    agent = await make_agent(bot, join_at=T0 + 100, self_join_delay=2.0, join_deadline=300.0)
    doc = await until(agent, "joining")
    assert looptime == 102
    assert (doc.since, doc.joined_by, doc.request_id) == (T0 + 102, "deadline", None)
    await until(agent, "joined")

    status, answer = await call(http, agent, "POST", "/v1/join", json=JOIN)  # the operator, late
    assert status == 200
    assert (answer["joinedBy"], answer["requestId"], answer["state"]) == ("deadline", None, "joined")
    assert [meeting.joined_by for meeting in bot.joins] == ["deadline"]


async def test_a_signal_before_join_at_plus_the_delay_disarms_the_safety_net(
    make_agent: MakeAgent, http: aiohttp.ClientSession
) -> None:
    bot = FakeBot()
    agent = await make_agent(bot, join_at=T0 + 100, self_join_delay=2.0)
    await asyncio.sleep(100)
    await call(http, agent, "POST", "/v1/join", json=JOIN)
    await asyncio.sleep(600)
    assert agent.state.doc.joined_by == "signal"
    assert len(bot.joins) == 1


async def test_a_moved_join_at_moves_the_safety_net_with_it(
    make_agent: MakeAgent, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    bot = FakeBot()
    agent = await make_agent(bot, join_at=T0 + 100, self_join_delay=2.0, join_deadline=300.0)
    status, answer = await call(http, agent, "POST", "/v1/schedule", json={"joinAt": "2025-06-15T15:09:40Z"})
    assert (status, answer["state"]) == (200, "ready")  # T0 + 180
    doc = await until(agent, "joining")
    assert looptime == 182, "the old JOIN_AT + 2 s passed without a join"
    assert doc.joined_by == "deadline"
    await until(agent, "joined")
    assert len(bot.joins) == 1


async def test_a_schedule_without_the_token_or_a_join_at_changes_nothing(
    make_agent: MakeAgent, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    agent = await make_agent(FakeBot(), join_at=T0 + 100, self_join_delay=2.0, join_deadline=300.0)
    status, _ = await call(http, agent, "POST", "/v1/schedule", token=None, json={"joinAt": "2025-06-15T15:09:40Z"})
    assert status == 401
    status, _ = await call(http, agent, "POST", "/v1/schedule", json={"joinAt": "soon"})
    assert status == 400
    await until(agent, "joining")
    assert looptime == 102


async def test_a_pod_started_past_the_deadline_reports_missed_and_never_joins(
    make_agent: MakeAgent, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    bot = FakeBot()
    agent = await make_agent(bot, join_at=T0 - 400, join_deadline=300.0)
    doc = await until(agent, "failed")
    assert looptime == 0
    assert doc.reason == "Missed"
    status, answer = await call(http, agent, "POST", "/v1/join", json=JOIN)
    assert (status, answer["state"]) == (200, "failed")
    assert bot.joins == []


async def test_a_deadline_shorter_than_the_delay_reports_missed_at_the_deadline(
    make_agent: MakeAgent, looptime: LoopTimeProxy
) -> None:
    agent = await make_agent(join_at=T0 + 100, self_join_delay=5.0, join_deadline=3.0)
    doc = await until(agent, "failed")
    assert looptime == 103 and doc.reason == "Missed"


# -- the long-poll ------------------------------------------------------------------------------


async def test_the_long_poll_answers_at_once_when_the_version_is_newer(
    make_agent: MakeAgent, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    agent = await make_agent()
    status, answer = await call(http, agent, "GET", "/v1/state", params={"after": 0, "timeout": 30})
    assert (status, answer["version"], answer["state"]) == (200, 1, "ready")
    assert looptime == 0


async def test_the_long_poll_answers_when_the_state_changes(
    make_agent: MakeAgent, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    agent = await make_agent()
    poll = asyncio.create_task(call(http, agent, "GET", "/v1/state", params={"after": 1, "timeout": 30}))
    await asyncio.sleep(5)
    assert not poll.done()
    await call(http, agent, "POST", "/v1/join", json=JOIN)
    status, answer = await poll
    assert (status, answer["version"], answer["state"]) == (200, 2, "joining")
    assert looptime == 5


@pytest.mark.parametrize(("timeout", "answered_at"), [(7, 7), (600, 60)], ids=["as-asked", "capped-at-60"])
async def test_the_long_poll_answers_the_current_document_on_timeout(
    make_agent: MakeAgent,
    http: aiohttp.ClientSession,
    looptime: LoopTimeProxy,
    timeout: float,
    answered_at: float,
) -> None:
    agent = await make_agent()
    status, answer = await call(http, agent, "GET", "/v1/state", params={"after": 1, "timeout": timeout})
    assert (status, answer["version"]) == (200, 1)
    assert looptime == answered_at


# -- leaving --------------------------------------------------------------------------------------


async def test_a_leave_goes_through_leaving_to_ended(make_agent: MakeAgent, http: aiohttp.ClientSession) -> None:
    bot = FakeBot()
    agent = await make_agent(bot)
    await call(http, agent, "POST", "/v1/join", json=JOIN)
    await until(agent, "joined")
    status, answer = await call(http, agent, "POST", "/v1/leave", json={"reason": "ScheduledBotDeleted"})
    assert (status, answer["state"], answer["reason"]) == (200, "leaving", "ScheduledBotDeleted")
    doc = await until(agent, "ended")
    assert doc.reason == "ScheduledBotDeleted"
    assert bot.leaves == ["ScheduledBotDeleted"]


async def test_a_leave_before_the_join_ends_the_bot_without_joining(
    make_agent: MakeAgent, http: aiohttp.ClientSession
) -> None:
    bot = FakeBot()
    agent = await make_agent(bot, join_at=T0 + 100)
    status, answer = await call(http, agent, "POST", "/v1/leave", json={})
    assert (status, answer["state"], answer["reason"]) == (200, "ended", "LeaveRequested")
    await asyncio.sleep(200)  # past the self-join instant
    assert await call(http, agent, "POST", "/v1/join", json=JOIN) == (200, answer)
    assert bot.joins == []


async def test_the_bot_leaves_on_its_own_after_the_maximum_duration(
    make_agent: MakeAgent, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    agent = await make_agent(max_duration=50.0)
    await asyncio.sleep(10)
    await call(http, agent, "POST", "/v1/join", json=JOIN)
    doc = await until(agent, "leaving")
    assert looptime == 60 and doc.reason == "MaxDuration"
    await until(agent, "ended")


async def test_a_bot_that_does_not_leave_is_stopped_after_its_leave_timeout(
    make_agent: MakeAgent, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    class StubbornBot(FakeBot):
        leave_timeout = 15.0

        async def join(self, meeting: Meeting) -> None:
            await self.reporter.report("joined")
            await asyncio.Event().wait()

    agent = await make_agent(StubbornBot())
    await call(http, agent, "POST", "/v1/join", json=JOIN)
    await until(agent, "joined")
    await call(http, agent, "POST", "/v1/leave", json={"reason": "x"})
    doc = await until(agent, "ended")
    assert looptime == 15
    assert "did not leave within 15 s" in doc.message


# -- failures, SIGTERM, exit -----------------------------------------------------------------------


async def test_a_bot_failure_is_reported_with_its_reason(make_agent: MakeAgent, http: aiohttp.ClientSession) -> None:
    agent = await make_agent(FakeBot(fail_with=BotFailure("JoinRefused", "the host said no")))
    await call(http, agent, "POST", "/v1/join", json=JOIN)
    doc = await until(agent, "failed")
    assert (doc.reason, doc.message) == ("JoinRefused", "the host said no")


async def test_an_unexpected_exception_fails_the_bot(make_agent: MakeAgent, http: aiohttp.ClientSession) -> None:
    agent = await make_agent(FakeBot(fail_with=KeyError("x")))
    await call(http, agent, "POST", "/v1/join", json=JOIN)
    doc = await until(agent, "failed")
    assert (doc.reason, doc.message) == ("BotFailed", "KeyError: 'x'")


async def test_a_failed_warm_up_fails_the_bot_and_it_never_gets_ready(
    make_agent: MakeAgent, http: aiohttp.ClientSession
) -> None:
    agent = await make_agent(FailingPrepareBot())
    doc = await until(agent, "failed")
    assert (doc.reason, doc.message) == ("PrepareFailed", "RuntimeError: no browser")
    assert (await call(http, agent, "GET", "/v1/ready", token=None))[0] == 503


async def test_sigterm_in_a_meeting_leaves_and_then_exits(make_agent: MakeAgent, http: aiohttp.ClientSession) -> None:
    bot = FakeBot()
    agent = await make_agent(bot)
    await call(http, agent, "POST", "/v1/join", json=JOIN)
    await until(agent, "joined")
    agent.terminate()
    agent.terminate()  # a second SIGTERM (e.g. to the process group) must not cut the leave short
    assert await agent.wait() == 0
    assert (agent.state.doc.state, agent.state.doc.reason) == ("ended", "Terminated")
    assert bot.leaves == ["Terminated"]


async def test_sigterm_before_the_join_exits_at_once(make_agent: MakeAgent, looptime: LoopTimeProxy) -> None:
    agent = await make_agent(join_at=T0 + 100)
    agent.terminate()
    assert await agent.wait() == 0
    assert agent.state.doc.state == "ready" and looptime == 0


async def test_after_the_end_the_agent_exits_once_the_final_document_was_read(
    make_agent: MakeAgent, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    agent = await make_agent(FakeBot(fail_with=BotFailure("X", "y")), linger=60.0)
    await call(http, agent, "POST", "/v1/join", json=JOIN)
    await until(agent, "failed")
    await asyncio.sleep(5)
    status, answer = await call(http, agent, "GET", "/v1/state", params={"after": 2})
    assert (status, answer["state"]) == (200, "failed")
    assert await agent.wait() == 1
    assert looptime == 5


async def test_a_leave_answered_with_the_final_document_lets_the_agent_exit_at_once(
    make_agent: MakeAgent, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    agent = await make_agent(linger=60.0)
    status, answer = await call(http, agent, "POST", "/v1/leave", json={"reason": "x"})
    assert (status, answer["state"]) == (200, "ended")
    assert await agent.wait() == 0
    assert looptime == 0


async def test_after_the_end_the_agent_lingers_when_nobody_reads(
    make_agent: MakeAgent, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    agent = await make_agent(FakeBot(fail_with=BotFailure("X", "y")), linger=60.0)
    await call(http, agent, "POST", "/v1/join", json=JOIN)
    assert await agent.wait() == 1
    assert looptime == 60


async def test_a_bot_that_reports_ended_but_never_returns_does_not_hold_the_pod(
    make_agent: MakeAgent, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    class HangingBot(FakeBot):
        leave_timeout = 15.0

        async def join(self, meeting: Meeting) -> None:
            await self.reporter.report("ended", "hung up")
            await asyncio.Event().wait()

    agent = await make_agent(HangingBot(), linger=0.0)
    await call(http, agent, "POST", "/v1/join", json=JOIN)
    assert await agent.wait() == 0
    assert looptime == 15


@pytest.mark.parametrize(
    "join_at",
    ["2025-06-15 15:09:40+00:00", "2025-06-15T15:09+00:00", "2025-06-15T15:09:40.1234567891+00:00", "2025-06-15"],
    ids=["space", "no-seconds", "ten-fraction-digits", "date-only"],
)
async def test_a_schedule_takes_only_the_times_the_operator_itself_accepts(
    make_agent: MakeAgent, http: aiohttp.ClientSession, join_at: str
) -> None:
    agent = await make_agent(FakeBot(), join_at=T0 + 100, join_deadline=300.0)
    status, answer = await call(http, agent, "POST", "/v1/schedule", json={"joinAt": join_at})
    assert status == 400
    assert answer["error"].startswith("joinAt: ") and "expected ISO 8601 with an offset" in answer["error"]


async def test_connections_over_the_cap_are_closed_as_they_are_accepted(
    make_agent: MakeAgent, http: aiohttp.ClientSession
) -> None:
    agent = await make_agent()
    opened = [await asyncio.open_connection("127.0.0.1", agent.port) for _ in range(MAX_CONNECTIONS + 8)]
    await asyncio.sleep(0.1)
    closed = [reader for reader, _ in opened if reader.at_eof()]
    assert len(closed) == 8
    for _, writer in opened:
        writer.close()
    await asyncio.sleep(0.1)
    assert (await call(http, agent, "GET", "/v1/ready", token=None))[0] == 200  # room again


async def test_a_request_with_too_many_headers_is_refused(make_agent: MakeAgent, http: aiohttp.ClientSession) -> None:
    agent = await make_agent()
    flood = {f"X-Flood-{i}": "y" for i in range(100)}
    async with http.get(f"http://127.0.0.1:{agent.port}/v1/ready", headers=flood) as response:
        assert response.status == 400


async def test_a_join_body_over_64_kib_is_refused_unread(make_agent: MakeAgent, http: aiohttp.ClientSession) -> None:
    agent = await make_agent()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {**JOIN, "botName": "n" * 200_000}
    async with http.post(f"http://127.0.0.1:{agent.port}/v1/join", json=body, headers=headers) as response:
        assert response.status == 413
    assert agent.state.doc.state == "ready"


@pytest.mark.parametrize(
    ("join_at", "deadline", "now", "kept"),
    [
        (None, None, T0, MIN_IDLE_SECONDS),
        (T0 + 3600, 120.0, T0, 3600 + 120 + MIN_IDLE_SECONDS),
        (T0 - 7200, 120.0, T0, MIN_IDLE_SECONDS),
    ],
    ids=["no-join-time", "before-the-deadline", "long-after-it"],
)
def test_idle_connections_are_kept_through_the_join_deadline_then_briefly(
    join_at: float | None, deadline: float | None, now: float, kept: float
) -> None:
    assert idle_timeout_for(join_at=join_at, join_deadline=deadline, now=now) == kept
