"""The local ICS server (tools/localcluster/ics.py): caching headers, edits an organizer makes, failures."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

import aiohttp
import pytest

from localcluster.ics import Event, IcsServer, IcsServerProcess, parse_time
from scheduledbot.api.schedule import parse_schedule_spec
from scheduledbot.core.occurrences import Occurrence, expand, parse_feed

BERLIN = "Europe/Berlin"
SCHEDULE = parse_schedule_spec(
    {"timeZone": BERLIN, "ical": {"urlSecretRef": {"name": "c", "key": "u"}}, "botTemplate": {"spec": {}}},
    extra_hosts=frozenset(),
)


def occurrences(text: bytes) -> list[Occurrence]:
    return expand(
        SCHEDULE,
        start=datetime(2026, 3, 1, tzinfo=UTC),
        end=datetime(2026, 5, 1, tzinfo=UTC),
        limit=100,
        feed=parse_feed(text),
    )


def weekly() -> Event:
    return Event(
        uid="sync@local",
        summary="Weekly sync",
        start=parse_time("2026-03-16T09:00:00", BERLIN),
        rrule="FREQ=WEEKLY;COUNT=4",
        conference="https://meet.google.com/abc-defg-hij",
    )


@pytest.fixture
async def server() -> AsyncIterator[IcsServer]:
    async with IcsServer() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, bytes, Mapping[str, str]]:
    async with http.get(url, headers=headers) as response:
        return response.status, await response.read(), response.headers.copy()


@pytest.mark.timeout(10)
async def test_the_feed_has_etag_and_last_modified_and_answers_304(
    server: IcsServer, http: aiohttp.ClientSession
) -> None:
    server.add_event("team", weekly())
    status, body, headers = await get(http, server.feed_url("team"))
    assert status == 200 and headers["Content-Type"].startswith("text/calendar")
    starts = [o.start for o in occurrences(body)]
    # 09:00 Berlin, before and after the change to summer time.
    assert [s.strftime("%m-%d %H:%M") for s in starts] == ["03-16 08:00", "03-23 08:00", "03-30 07:00", "04-06 07:00"]
    assert (await get(http, server.feed_url("team"), **{"If-None-Match": headers["ETag"]}))[0] == 304
    assert (await get(http, server.feed_url("team"), **{"If-Modified-Since": headers["Last-Modified"]}))[0] == 304
    server.move(
        "team",
        "sync@local",
        parse_time("2026-03-24T10:00:00", BERLIN),
        recurrence_id=parse_time("2026-03-23T09:00:00", BERLIN),
    )
    status, _, changed = await get(http, server.feed_url("team"), **{"If-None-Match": headers["ETag"]})
    assert status == 200 and changed["ETag"] != headers["ETag"]
    status, _, _ = await get(http, server.feed_url("team"), **{"If-Modified-Since": headers["Last-Modified"]})
    assert status == 200
    assert [r["status"] for r in server.calendar("team").requests] == [200, 304, 304, 200, 200]


@pytest.mark.timeout(10)
async def test_moving_and_cancelling_one_occurrence_and_the_series(
    server: IcsServer, http: aiohttp.ClientSession
) -> None:
    server.add_event("team", weekly())
    _, before, _ = await get(http, server.feed_url("team"))
    keys = [o.key for o in occurrences(before)]
    server.move(
        "team",
        "sync@local",
        parse_time("2026-03-24T10:00:00", BERLIN),
        recurrence_id=parse_time("2026-03-23T09:00:00", BERLIN),
    )
    server.cancel("team", "sync@local", recurrence_id=parse_time("2026-03-30T09:00:00", BERLIN))
    _, after, _ = await get(http, server.feed_url("team"))
    found = occurrences(after)
    assert [o.key for o in found] == [keys[0], keys[1], keys[3]]  # the moved one keeps its key; the cancelled is gone
    assert found[1].start == datetime(2026, 3, 24, 9, tzinfo=UTC) and (found[1].sequence or 0) >= 1
    assert all(o.meeting_url == "https://meet.google.com/abc-defg-hij" for o in found)
    server.cancel("team", "sync@local")
    assert occurrences((await get(http, server.feed_url("team")))[1]) == []


@pytest.mark.timeout(10)
async def test_it_answers_errors_when_told(server: IcsServer, http: aiohttp.ClientSession) -> None:
    server.add_event("team", weekly())
    server.fail(500, count=2)
    assert [(await get(http, server.feed_url("team")))[0] for _ in range(3)] == [500, 500, 200]
    server.fail(503)
    assert [(await get(http, server.feed_url("team")))[0] for _ in range(2)] == [503, 503]
    server.fail(None)
    assert (await get(http, server.feed_url("team")))[0] == 200


@pytest.mark.timeout(10)
async def test_the_admin_api_over_http(server: IcsServer, http: aiohttp.ClientSession) -> None:
    admin = f"{server.base_url}/admin/c/team"
    event = {
        "uid": "one@local",
        "summary": "Review",
        "start": "2026-04-01T12:00:00Z",
        "location": "https://zoom.us/j/42",
    }
    async with http.post(f"{admin}/events", json=event) as response:
        assert response.status == 201
    async with http.post(f"{admin}/events", json={"uid": "x", "start": "2026-04-01T12:00:00"}) as response:
        assert response.status == 400 and "tzid" in (await response.json())["error"]
    async with http.post(f"{admin}/events/one@local/move", json={"start": "2026-04-02T12:00:00Z"}) as response:
        assert response.status == 200
    async with http.post(f"{admin}/events/nope/cancel", json={}) as response:
        assert response.status == 404
    [review] = occurrences((await get(http, server.feed_url("team")))[1])
    assert (review.start, review.meeting_url, review.key) == (
        datetime(2026, 4, 2, 12, tzinfo=UTC),
        "https://zoom.us/j/42",
        "one@local",
    )
    async with http.put(admin, data="BEGIN:VCALENDAR\nEND:VCALENDAR\n") as response:
        assert response.status == 200
    assert (await get(http, server.feed_url("team")))[1] == b"BEGIN:VCALENDAR\nEND:VCALENDAR\n"


@pytest.mark.timeout(30)
def test_the_server_as_a_subprocess() -> None:
    with IcsServerProcess() as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        server.add_event(
            "team", uid="a@local", start="2026-04-01T09:00:00", tzid=BERLIN, location="https://zoom.us/j/1"
        )
        server.cancel("team", "a@local")
        with urllib.request.urlopen(server.feed_url("team"), timeout=5) as response:
            assert b"STATUS:CANCELLED" in response.read()
