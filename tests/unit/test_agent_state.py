"""The agent's pure pieces: transitions, the state holder, the safety-net plan, the settings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from looptime import LoopTimeProxy

from scheduledbot import protocol as p
from scheduledbot.agent.runtime import self_join_plan
from scheduledbot.agent.settings import AgentSettings, SettingsError
from scheduledbot.agent.state import StateHolder, allowed
from scheduledbot.protocol import JoinedBy, JoinRequest, StateDoc

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        ("ready", "joining", True),
        ("ready", "ended", True),  # a leave before the join
        ("ready", "failed", True),  # Missed, or the warm-up failed
        ("ready", "joined", False),  # a bot cannot be in a meeting it did not join
        ("joining", "joining", True),  # a message update
        ("joining", "waiting_room", True),
        ("waiting_room", "joined", True),
        ("recording", "waiting_room", True),  # moved back to the lobby by the host
        ("joined", "joining", False),
        ("joined", "ready", False),
        ("leaving", "recording", False),  # a late report after the leave started
        ("leaving", "ended", True),
        ("ended", "failed", False),
        ("failed", "ended", False),
        ("ended", "ended", False),
    ],
)
def test_allowed_transitions(current: p.BotState, new: p.BotState, expected: bool) -> None:
    assert allowed(current, new) is expected


def test_a_holder_starts_ready_at_version_1_since_its_creation() -> None:
    holder = StateHolder(clock=FakeClock())
    assert holder.doc == StateDoc(version=1, state="ready", since=T0)


def test_each_change_bumps_the_version_and_stamps_since_from_the_clock() -> None:
    clock = FakeClock()
    holder = StateHolder(clock=clock)
    clock.now = T0 + 5
    assert holder.transition("joining", joined_by=JoinedBy.SIGNAL, request_id="r1")
    clock.now = T0 + 6
    assert holder.transition("joined", message="in")
    assert holder.doc == StateDoc(
        version=3, state="joined", since=T0 + 6, message="in", joined_by=JoinedBy.SIGNAL, request_id="r1"
    )


def test_repeating_the_same_state_and_message_is_not_a_change() -> None:
    holder = StateHolder(clock=FakeClock())
    holder.transition("joining", message="m")
    assert not holder.transition("joining", message="m")
    assert holder.doc.version == 2


def test_a_refused_transition_changes_nothing() -> None:
    holder = StateHolder(clock=FakeClock())
    holder.transition("failed", reason="Missed")
    assert not holder.transition("joining")
    assert holder.doc.version == 2 and holder.doc.state == "failed"


def test_the_state_document_in_json() -> None:
    doc = StateDoc(version=4, state="failed", since=T0 + 0.1234, message="m", reason="BotExited", exit_code=3)
    assert doc.to_json() == {
        "protocol": "v1",
        "version": 4,
        "state": "failed",
        "since": "2025-06-15T15:06:40.123Z",
        "message": "m",
        "reason": "BotExited",
        "joinedBy": None,
        "requestId": None,
        "exitCode": 3,
    }


@pytest.mark.looptime
async def test_a_waiter_wakes_on_the_change_not_before(looptime: LoopTimeProxy) -> None:
    holder = StateHolder(clock=FakeClock())
    waiter = asyncio.create_task(holder.wait_after(1, 30))
    await asyncio.sleep(5)
    assert not waiter.done()
    holder.transition("joining")
    doc = await waiter
    assert doc.version == 2
    assert looptime == 5


@pytest.mark.looptime
async def test_a_waiter_gets_the_current_document_on_timeout(looptime: LoopTimeProxy) -> None:
    holder = StateHolder(clock=FakeClock())
    doc = await holder.wait_after(1, 7)
    assert doc.version == 1
    assert looptime == 7


@pytest.mark.looptime
async def test_closing_releases_waiters(looptime: LoopTimeProxy) -> None:
    holder = StateHolder(clock=FakeClock())
    waiter = asyncio.create_task(holder.wait_after(1, None))
    await asyncio.sleep(3)
    holder.close()
    assert (await waiter).version == 1
    assert looptime == 3


@pytest.mark.parametrize(
    ("delay", "deadline", "now", "expected"),
    [
        (2.0, None, T0 - 600, ("join", T0 + 2)),
        (2.0, 300.0, T0 - 600, ("join", T0 + 2)),
        (2.0, 300.0, T0 + 100, ("join", T0 + 2)),  # late start, still within the deadline: at once
        (2.0, 300.0, T0 + 301, ("miss", T0 + 300)),  # started past the deadline
        (5.0, 3.0, T0 - 600, ("miss", T0 + 3)),  # the deadline comes before the self-join
    ],
)
def test_the_safety_net_plan(delay: float, deadline: float | None, now: float, expected: tuple[str, float]) -> None:
    assert self_join_plan(join_at=T0, delay=delay, deadline=deadline, now=now) == expected


def test_a_join_request_needs_a_request_id() -> None:
    with pytest.raises(ValueError, match="requestId"):
        JoinRequest.from_json({"meetingUrl": "https://x"})


def test_a_join_request_parses_join_at_with_any_offset() -> None:
    request = JoinRequest.from_json({"requestId": "r", "joinAt": "2025-06-15T17:06:40+0200"})
    assert request.join_at == T0


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    return {p.ENV_BOT_TOKEN_FILE: str(token_file), p.ENV_MEETING_URL: "https://zoom.us/j/1", **extra}


def test_settings_from_the_pod_environment(tmp_path: Path) -> None:
    settings = AgentSettings.from_env(
        _env(
            tmp_path,
            POD_IP="127.0.0.7",
            BOT_CONTROL_PORT="8181",
            JOIN_AT="2025-06-15T15:06:40Z",
            BOT_CONFIG='{"recordingDelaySeconds": 1}',
            JOIN_DEADLINE_SECONDS="300",
            MAX_DURATION_SECONDS="3600",
        )
    )
    assert settings.token == "s3cret"
    assert (settings.host, settings.port) == ("127.0.0.7", 8181)
    assert settings.join_at == T0
    assert settings.bot_config == {"recordingDelaySeconds": 1}
    assert (settings.self_join_delay, settings.join_deadline, settings.max_duration) == (2.0, 300.0, 3600.0)
    assert "s3cret" not in repr(settings)


def test_settings_listen_on_all_addresses_without_a_pod_ip(tmp_path: Path) -> None:
    assert AgentSettings.from_env(_env(tmp_path)).host == "0.0.0.0"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"JOIN_AT": "2025-06-15T15:06:40"}, "JOIN_AT: timestamp without a UTC offset"),
        ({"BOT_CONFIG": "[1]"}, "BOT_CONFIG: must be a JSON object"),
        ({"BOT_SELF_JOIN_DELAY_SECONDS": "-1"}, "must not be negative"),
        ({"BOT_TOKEN_FILE": "/nonexistent/token"}, "cannot read the token file"),
        ({"MEETING_URL": "", "JOIN_AT": "2025-06-15T15:06:40Z"}, "MEETING_URL is not"),
    ],
)
def test_unusable_settings_are_refused_with_the_variable_named(
    tmp_path: Path, extra: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        AgentSettings.from_env(_env(tmp_path, **extra))
