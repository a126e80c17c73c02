"""A small local meeting server: what the demo bot "joins" in tests and in the demo.

It stands in for Zoom/Meet/Teams so that the whole path (operator -> Pod ->
bot -> meeting) runs on one machine, and it records when each bot arrived,
with the wall clock, so that punctuality can be measured where it matters: at
the meeting.

Run it::

    python -m localcluster.meeting --host 127.0.0.1 --port 0 [--port-file F]

It prints its base URL (``http://127.0.0.1:<port>``) as the first line on
stdout, writes the port to ``F`` if asked, and stops on SIGTERM/SIGINT. From
pytest, use :class:`MeetingServer` in-process (``async with MeetingServer() as
server``) or :class:`MeetingServerProcess` as a subprocess.

Bot-facing API (the meeting URL is ``http://127.0.0.1:<port>/m/<meeting-id>``)
==============================================================================

``POST <meeting-url>`` body ``{"name": "<bot name>"}``
    Arrive: one request, so that its arrival time is the bot's punctuality.
    201 with the participant document
    ``{"meetingId", "participantId", "name", "status", "version", "meetingEnded"}``;
    ``status`` is ``admitted``, or ``waiting`` in a meeting with a waiting room.
    410 if the meeting has ended. An unknown meeting is created on the fly
    (no waiting room) unless the server runs with ``auto_create=False`` (404).
``GET <meeting-url>/participants/<pid>?after=<version>&timeout=<s>``
    Long-poll the participant document: answers as soon as its ``version`` is
    greater than ``after`` (admitted, meeting ended, ...) or after ``timeout``
    seconds (default 30, at most 60). A bot waits for admission and for the
    end of the meeting with this, never by polling.
``DELETE <meeting-url>/participants/<pid>``
    Depart (status ``left``); idempotent. 200 with the participant document.
``GET <meeting-url>``
    ``{"meetingId", "waitingRoom", "ended", "participants": <count present>}``.

Participant statuses: ``waiting`` -> ``admitted`` -> ``left`` (departed) or
``ended`` (the meeting ended while the participant was in it or waiting).

Admin API
=========

``POST /admin/meetings/<id>`` body ``{"waitingRoom": bool}``
    Create the meeting (201) or change its options (200).
``POST /admin/meetings/<id>/admit`` body ``{"participantId": ...}``, ``{"name": ...}`` or ``{}``
    Admit the waiting participants that match (all of them with ``{}``).
``POST /admin/meetings/<id>/end``
    End the meeting: everyone present gets status ``ended`` and a departure
    with cause ``meetingEnded``. Idempotent.
``GET /admin/meetings/<id>``
    ``{"meetingId", "url", "waitingRoom", "ended", "endedAt", "arrivals",
    "departures", "participants"}``. Arrivals and departures are
    ``{"participantId", "name", "timestamp": <time.time()>, "time": <RFC 3339>}``
    (departures add ``"cause": "left" | "meetingEnded"``); participants are
    ``{"participantId", "name", "status"}``.

All admin calls answer the admin document of the meeting; unknown meetings
are 404 except for creation.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import math
import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from aiohttp import web

from localcluster.httpserver import AppServer, ServerProcess, long_poll, serve

Status = Literal["waiting", "admitted", "left", "ended"]
DepartureCause = Literal["left", "meetingEnded"]

DEFAULT_LONG_POLL_SECONDS: Final = 30.0
MAX_LONG_POLL_SECONDS: Final = 60.0
#: Bots open their connection while staged, long before they arrive.
_KEEPALIVE_TIMEOUT_SECONDS: Final = 4 * 3600.0
_PRESENT: Final[frozenset[str]] = frozenset({"waiting", "admitted"})


def rfc3339(timestamp: float) -> str:
    """UTC with microseconds: arrival times are compared at millisecond precision."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, kw_only=True)
class Record:
    """One arrival or departure, stamped with the server's wall clock."""

    participant_id: str
    name: str
    timestamp: float
    cause: DepartureCause | None = None  # departures only

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "participantId": self.participant_id,
            "name": self.name,
            "timestamp": self.timestamp,
            "time": rfc3339(self.timestamp),
        }
        if self.cause is not None:
            doc["cause"] = self.cause
        return doc


@dataclass(kw_only=True)
class Participant:
    participant_id: str
    name: str
    status: Status
    version: int = 1


@dataclass(kw_only=True)
class Meeting:
    """One meeting's live state; changes go through :class:`MeetingServer`."""

    meeting_id: str
    waiting_room: bool = False
    ended_at: float | None = None
    participants: dict[str, Participant] = field(default_factory=dict)
    arrivals: list[Record] = field(default_factory=list)
    departures: list[Record] = field(default_factory=list)
    # Set and replaced on every change: long-pollers of this meeting wake up and re-check.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def participant_json(self, participant: Participant) -> dict[str, Any]:
        return {
            "meetingId": self.meeting_id,
            "participantId": participant.participant_id,
            "name": participant.name,
            "status": participant.status,
            "version": participant.version,
            "meetingEnded": self.ended,
        }


class MeetingServer(AppServer):
    """The meeting server, in-process: ``async with MeetingServer() as server: ...``.

    The methods :meth:`create_meeting`, :meth:`admit`, :meth:`end` and
    :meth:`snapshot` are what the admin API calls, usable directly from tests.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auto_create: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._auto_create = auto_create
        self._clock = clock
        self._meetings: dict[str, Meeting] = {}
        self._ids = itertools.count(1)
        self._closed = False
        app = web.Application()
        app.router.add_post("/m/{meeting}", self._arrive)
        app.router.add_get("/m/{meeting}", self._public)
        app.router.add_get("/m/{meeting}/participants/{participant}", self._poll)
        app.router.add_delete("/m/{meeting}/participants/{participant}", self._depart)
        app.router.add_post("/admin/meetings/{meeting}", self._admin_create)
        app.router.add_post("/admin/meetings/{meeting}/admit", self._admin_admit)
        app.router.add_post("/admin/meetings/{meeting}/end", self._admin_end)
        app.router.add_get("/admin/meetings/{meeting}", self._admin_get)
        runner = web.AppRunner(app, keepalive_timeout=_KEEPALIVE_TIMEOUT_SECONDS, shutdown_timeout=2.0, access_log=None)
        super().__init__(runner, host=host, port=port)

    async def stop(self) -> None:
        self._closed = True  # release long-polls so that shutdown does not wait for them
        for meeting in self._meetings.values():
            _wake(meeting)
        await super().stop()

    def meeting_url(self, meeting_id: str) -> str:
        return f"{self.base_url}/m/{meeting_id}"

    # -- operations (the admin API and tests) ------------------------------------------

    def create_meeting(self, meeting_id: str, *, waiting_room: bool = False) -> Meeting:
        """Create a meeting, or change the options of an existing one."""
        meeting = self._meetings.get(meeting_id)
        if meeting is None:
            meeting = self._meetings[meeting_id] = Meeting(meeting_id=meeting_id, waiting_room=waiting_room)
        meeting.waiting_room = waiting_room
        return meeting

    def admit(self, meeting_id: str, *, participant_id: str | None = None, name: str | None = None) -> list[str]:
        """Admit waiting participants (all, or those matching); the ids admitted."""
        meeting = self._meetings[meeting_id]
        admitted = [
            participant
            for participant in meeting.participants.values()
            if participant.status == "waiting"
            and participant_id in (None, participant.participant_id)
            and name in (None, participant.name)
        ]
        for participant in admitted:
            _set_status(participant, "admitted")
        if admitted:
            _wake(meeting)
        return [participant.participant_id for participant in admitted]

    def end(self, meeting_id: str) -> None:
        """End the meeting: everyone still present is out, with cause ``meetingEnded``."""
        meeting = self._meetings[meeting_id]
        if meeting.ended:
            return
        now = self._clock()
        meeting.ended_at = now
        for participant in meeting.participants.values():
            if participant.status in _PRESENT:
                _depart(meeting, participant, "ended", now)
        _wake(meeting)

    def snapshot(self, meeting_id: str) -> dict[str, Any]:
        """The admin document of a meeting (KeyError if unknown)."""
        meeting = self._meetings[meeting_id]
        return {
            "meetingId": meeting.meeting_id,
            "url": self.meeting_url(meeting.meeting_id),
            "waitingRoom": meeting.waiting_room,
            "ended": meeting.ended,
            "endedAt": None if meeting.ended_at is None else rfc3339(meeting.ended_at),
            "arrivals": [record.to_json() for record in meeting.arrivals],
            "departures": [record.to_json() for record in meeting.departures],
            "participants": [
                {"participantId": p.participant_id, "name": p.name, "status": p.status}
                for p in meeting.participants.values()
            ],
        }

    # -- bot-facing handlers -----------------------------------------------------------------

    async def _arrive(self, request: web.Request) -> web.Response:
        now = self._clock()  # first thing: the arrival time is what punctuality is measured by
        meeting_id = request.match_info["meeting"]
        meeting = self._meetings.get(meeting_id)
        if meeting is None:
            if not self._auto_create:
                return _error(404, f"no meeting {meeting_id!r}")
            meeting = self.create_meeting(meeting_id)
        body = await _json_object(request)
        if body is None:
            return _error(400, "the body must be a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return _error(400, "name must be a non-empty string")
        if meeting.ended:
            return _error(410, f"meeting {meeting_id!r} has ended")
        participant = Participant(
            participant_id=f"p{next(self._ids)}",
            name=name,
            status="waiting" if meeting.waiting_room else "admitted",
        )
        meeting.participants[participant.participant_id] = participant
        meeting.arrivals.append(Record(participant_id=participant.participant_id, name=name, timestamp=now))
        _wake(meeting)
        return web.json_response(meeting.participant_json(participant), status=201)

    async def _public(self, request: web.Request) -> web.Response:
        meeting = self._meetings.get(request.match_info["meeting"])
        if meeting is None:
            return _error(404, "no such meeting")
        present = sum(1 for p in meeting.participants.values() if p.status in _PRESENT)
        return web.json_response(
            {
                "meetingId": meeting.meeting_id,
                "waitingRoom": meeting.waiting_room,
                "ended": meeting.ended,
                "participants": present,
            }
        )

    async def _poll(self, request: web.Request) -> web.Response:
        found = self._participant(request)
        if isinstance(found, web.Response):
            return found
        meeting, participant = found
        try:
            after = int(request.query.get("after", "0"))
            timeout = float(request.query.get("timeout", DEFAULT_LONG_POLL_SECONDS))
            if not math.isfinite(timeout) or timeout < 0:
                raise ValueError
        except ValueError:
            return _error(400, "after must be an integer and timeout a non-negative number")
        await long_poll(
            lambda: participant.version > after or self._closed,
            lambda: meeting.changed,
            timeout=min(timeout, MAX_LONG_POLL_SECONDS),
        )
        return web.json_response(meeting.participant_json(participant))

    async def _depart(self, request: web.Request) -> web.Response:
        found = self._participant(request)
        if isinstance(found, web.Response):
            return found
        meeting, participant = found
        if participant.status in _PRESENT:
            _depart(meeting, participant, "left", self._clock())
            _wake(meeting)
        return web.json_response(meeting.participant_json(participant))

    def _participant(self, request: web.Request) -> tuple[Meeting, Participant] | web.Response:
        meeting = self._meetings.get(request.match_info["meeting"])
        participant = meeting.participants.get(request.match_info["participant"]) if meeting else None
        if meeting is None or participant is None:
            return _error(404, "no such meeting or participant")
        return meeting, participant

    # -- admin handlers -------------------------------------------------------------------------

    async def _admin_create(self, request: web.Request) -> web.Response:
        meeting_id = request.match_info["meeting"]
        body = await _json_object(request) if request.can_read_body else {}
        waiting_room = body.get("waitingRoom", False) if body is not None else None
        if not isinstance(waiting_room, bool):
            return _error(400, "the body must be a JSON object; waitingRoom a boolean")
        existed = meeting_id in self._meetings
        self.create_meeting(meeting_id, waiting_room=waiting_room)
        return web.json_response(self.snapshot(meeting_id), status=200 if existed else 201)

    async def _admin_admit(self, request: web.Request) -> web.Response:
        meeting_id = request.match_info["meeting"]
        if meeting_id not in self._meetings:
            return _error(404, f"no meeting {meeting_id!r}")
        body = await _json_object(request) if request.can_read_body else {}
        if body is None:
            return _error(400, "the body must be a JSON object")
        participant_id, name = body.get("participantId"), body.get("name")
        if not all(value is None or isinstance(value, str) for value in (participant_id, name)):
            return _error(400, "participantId and name must be strings")
        self.admit(meeting_id, participant_id=participant_id, name=name)
        return web.json_response(self.snapshot(meeting_id))

    async def _admin_end(self, request: web.Request) -> web.Response:
        meeting_id = request.match_info["meeting"]
        if meeting_id not in self._meetings:
            return _error(404, f"no meeting {meeting_id!r}")
        self.end(meeting_id)
        return web.json_response(self.snapshot(meeting_id))

    async def _admin_get(self, request: web.Request) -> web.Response:
        meeting_id = request.match_info["meeting"]
        if meeting_id not in self._meetings:
            return _error(404, f"no meeting {meeting_id!r}")
        return web.json_response(self.snapshot(meeting_id))


def _set_status(participant: Participant, status: Status) -> None:
    participant.status = status
    participant.version += 1


def _depart(meeting: Meeting, participant: Participant, status: Literal["left", "ended"], now: float) -> None:
    """The participant out of the meeting, as `status`: it left, or the meeting ended."""
    _set_status(participant, status)
    cause: DepartureCause = "left" if status == "left" else "meetingEnded"
    meeting.departures.append(
        Record(participant_id=participant.participant_id, name=participant.name, timestamp=now, cause=cause)
    )


def _wake(meeting: Meeting) -> None:
    meeting.changed.set()
    meeting.changed = asyncio.Event()


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class MeetingServerProcess(ServerProcess):
    """The meeting server as a subprocess (``with MeetingServerProcess() as server: server.base_url``).

    For tests whose event loop must not host the server (e.g. a bot process
    under test talks to it while the test blocks).
    """

    module = "localcluster.meeting"
    what = "the meeting server"

    def meeting_url(self, meeting_id: str) -> str:
        return f"{self.base_url}/m/{meeting_id}"

    @property
    def address(self) -> str:
        """`host:port`, as the operator's --extra-meeting-hosts admits it."""
        return self.base_url.split("://", 1)[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m localcluster.meeting", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--port-file", type=pathlib.Path, help="write the bound port to this file")
    args = parser.parse_args(argv)
    asyncio.run(serve(lambda: MeetingServer(host=args.host, port=args.port), port_file=args.port_file))


if __name__ == "__main__":
    main()
