"""The local meeting server (tools/localcluster/meeting.py), in-process on virtual time and as a subprocess."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from looptime import LoopTimeProxy

from localcluster.meeting import MeetingServer, MeetingServerProcess, rfc3339

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z
TOOLS = str(Path(__file__).resolve().parents[2] / "tools")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, url: str, body: Any = None, **params: Any) -> tuple[int, Any]:
    async with http.request(method, url, json=body, params=params or None) as response:
        return response.status, await response.json()


@pytest.fixture
async def server() -> AsyncIterator[MeetingServer]:
    async with MeetingServer() as server:
        yield server


@pytest.mark.looptime(end=600)
@pytest.mark.timeout(10)
async def test_an_arrival_is_recorded_with_the_server_clock_and_the_bot_name(
    http: aiohttp.ClientSession,
) -> None:
    loop = asyncio.get_running_loop()
    async with MeetingServer(clock=lambda: T0 + loop.time()) as server:
        await asyncio.sleep(12.5)
        status, participant = await call(http, "POST", server.meeting_url("standup"), {"name": "Notetaker"})
        assert status == 201
        assert participant == {
            "meetingId": "standup",
            "participantId": participant["participantId"],
            "name": "Notetaker",
            "status": "admitted",  # auto-created meeting: no waiting room
            "version": 1,
            "meetingEnded": False,
        }
        assert server.snapshot("standup")["arrivals"] == [
            {
                "participantId": participant["participantId"],
                "name": "Notetaker",
                "timestamp": T0 + 12.5,
                "time": "2025-06-15T15:06:52.500000Z",
            }
        ]


def test_timestamps_are_rfc3339_utc_with_microseconds() -> None:
    assert rfc3339(T0 + 0.000123) == "2025-06-15T15:06:40.000123Z"


@pytest.mark.looptime(end=600)
@pytest.mark.timeout(10)
async def test_a_waiting_room_holds_arrivals_until_the_admin_admits_them(
    server: MeetingServer, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    admin = f"{server.base_url}/admin/meetings/board"
    status, meeting = await call(http, "POST", admin, {"waitingRoom": True})
    assert (status, meeting["waitingRoom"], meeting["url"]) == (201, True, server.meeting_url("board"))
    _, participant = await call(http, "POST", server.meeting_url("board"), {"name": "Notetaker"})
    assert participant["status"] == "waiting"

    poll_url = f"{server.meeting_url('board')}/participants/{participant['participantId']}"
    poll = asyncio.create_task(call(http, "GET", poll_url, after=1, timeout=30))
    await asyncio.sleep(4)
    assert not poll.done()
    status, meeting = await call(http, "POST", f"{admin}/admit", {"name": "Notetaker"})
    assert meeting["participants"] == [
        {"participantId": participant["participantId"], "name": "Notetaker", "status": "admitted"}
    ]
    status, admitted = await poll
    assert (status, admitted["status"], admitted["version"]) == (200, "admitted", 2)
    assert looptime == 4


@pytest.mark.looptime(end=600)
@pytest.mark.timeout(10)
async def test_the_participant_long_poll_answers_on_timeout_without_a_change(
    server: MeetingServer, http: aiohttp.ClientSession, looptime: LoopTimeProxy
) -> None:
    _, participant = await call(http, "POST", server.meeting_url("m"), {"name": "A"})
    url = f"{server.meeting_url('m')}/participants/{participant['participantId']}"
    status, same = await call(http, "GET", url, after=1, timeout=600)
    assert (status, same["version"]) == (200, 1)
    assert looptime == 60  # capped


@pytest.mark.looptime(end=600)
@pytest.mark.timeout(10)
async def test_ending_a_meeting_wakes_its_participants_and_records_their_departures(
    server: MeetingServer, http: aiohttp.ClientSession
) -> None:
    server.create_meeting("m", waiting_room=True)
    _, waiting = await call(http, "POST", server.meeting_url("m"), {"name": "Early"})
    url = f"{server.meeting_url('m')}/participants/{waiting['participantId']}"
    poll = asyncio.create_task(call(http, "GET", url, after=1))
    await asyncio.sleep(1)
    status, meeting = await call(http, "POST", f"{server.base_url}/admin/meetings/m/end")
    assert (status, meeting["ended"]) == (200, True)
    assert [(d["name"], d["cause"]) for d in meeting["departures"]] == [("Early", "meetingEnded")]
    _, ended = await poll
    assert (ended["status"], ended["meetingEnded"]) == ("ended", True)
    status, refused = await call(http, "POST", server.meeting_url("m"), {"name": "Late"})
    assert (status, refused) == (410, {"error": "meeting 'm' has ended"})


@pytest.mark.timeout(10)
async def test_a_departure_is_recorded_once(server: MeetingServer, http: aiohttp.ClientSession) -> None:
    _, participant = await call(http, "POST", server.meeting_url("m"), {"name": "A"})
    url = f"{server.meeting_url('m')}/participants/{participant['participantId']}"
    for _ in range(2):
        status, left = await call(http, "DELETE", url)
        assert (status, left["status"]) == (200, "left")
    departures = server.snapshot("m")["departures"]
    assert [(d["name"], d["cause"]) for d in departures] == [("A", "left")]
    assert departures[0]["timestamp"] >= server.snapshot("m")["arrivals"][0]["timestamp"]


@pytest.mark.timeout(10)
async def test_the_public_meeting_page(server: MeetingServer, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", server.meeting_url("m"), {"name": "A"})
    assert await call(http, "GET", server.meeting_url("m")) == (
        200,
        {"meetingId": "m", "waitingRoom": False, "ended": False, "participants": 1},
    )


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/admin/meetings/nope", None, 404),
        ("POST", "/admin/meetings/nope/admit", {}, 404),
        ("POST", "/admin/meetings/nope/end", None, 404),
        ("GET", "/m/nope/participants/p1", None, 404),
        ("POST", "/m/x", {"name": ""}, 400),
        ("POST", "/m/x", ["A"], 400),
        ("POST", "/admin/meetings/x", {"waitingRoom": "yes"}, 400),
    ],
)
async def test_bad_calls(
    server: MeetingServer, http: aiohttp.ClientSession, method: str, path: str, body: Any, status: int
) -> None:
    answer_status, answer = await call(http, method, f"{server.base_url}{path}", body)
    assert answer_status == status and "error" in answer


@pytest.mark.timeout(10)
async def test_without_auto_create_unknown_meetings_are_404(http: aiohttp.ClientSession) -> None:
    async with MeetingServer(auto_create=False) as server:
        status, _ = await call(http, "POST", server.meeting_url("m"), {"name": "A"})
        assert status == 404


@pytest.mark.timeout(20)
def test_as_a_subprocess_it_writes_its_port_and_prints_its_url(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localcluster.meeting",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": TOOLS},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{int(port_file.read_text())}"
        with urllib.request.urlopen(urllib.request.Request(f"{url}/m/x", data=b'{"name": "A"}', method="POST")) as r:
            assert json.load(r)["status"] == "admitted"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


@pytest.mark.timeout(20)
def test_the_subprocess_helper() -> None:
    with MeetingServerProcess() as server:
        request = urllib.request.Request(f"{server.base_url}/admin/meetings/x", data=b"{}", method="POST")
        with urllib.request.urlopen(request) as response:
            assert json.load(response)["url"] == server.meeting_url("x")
