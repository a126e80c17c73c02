"""A small local iCalendar server: the calendar feed BotSchedule reads, in tests and demos.

It serves mutable calendars over HTTP on loopback, with the caching headers
real feeds have (ETag, Last-Modified, 304 on If-None-Match / If-Modified-Since),
and can be told to move or cancel an event (as an organizer would, with a
RECURRENCE-ID override for one occurrence of a series) or to answer errors.

Run it::

    python -m localcluster.ics --host 127.0.0.1 --port 0 [--port-file F]

It prints its base URL as the first line on stdout and stops on SIGTERM/SIGINT.
From pytest, use :class:`IcsServer` in-process (``async with IcsServer() as
server``) or :class:`IcsServerProcess` as a subprocess (its admin methods are
plain blocking HTTP calls).

Feed API
========

``GET /c/<calendar>.ics``
    The calendar as ``text/calendar``, with ``ETag`` and ``Last-Modified``; 304
    when ``If-None-Match`` matches the ETag or ``If-Modified-Since`` is not older
    than the last change. An unknown calendar is served empty.

Admin API (JSON)
================

``PUT /admin/c/<calendar>`` body: an iCalendar document
    Replace the calendar with this text (served as given).
``POST /admin/c/<calendar>/events`` body ``{"uid", "summary", "start", "minutes", "tzid", "rrule",
"location", "description", "conference"}``
    Add or replace an event. ``start`` is ``2026-03-02T09:00:00`` (local in
    ``tzid``), or RFC 3339 with an offset when ``tzid`` is absent; ``minutes``
    defaults to 30; ``rrule`` is an RRULE value; ``conference`` becomes
    ``X-GOOGLE-CONFERENCE``.
``POST /admin/c/<calendar>/events/<uid>/move`` body ``{"start", "recurrenceId"}``
    Move the event, or with ``recurrenceId`` (the occurrence's original start,
    in the same form as ``start``) only that occurrence: an override with the
    same UID, a RECURRENCE-ID and a higher SEQUENCE.
``POST /admin/c/<calendar>/events/<uid>/cancel`` body ``{"recurrenceId"}`` or ``{}``
    Cancel one occurrence (a cancelled override) or the whole event (STATUS:CANCELLED).
``DELETE /admin/c/<calendar>/events/<uid>``
    Remove the event and its overrides from the feed.
``POST /admin/fail`` body ``{"status": 500, "count": 2}``
    The next ``count`` feed requests (every one with ``"count": null``) answer
    ``status``; ``{"status": null}`` stops it.
``GET /admin/c/<calendar>/requests``
    The feed requests so far: ``{"status", "ifNoneMatch", "ifModifiedSince"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
from aiohttp import web

from localcluster.httpserver import AppServer, ServerProcess, serve

PRODID = "-//scheduledbot-operator//localcluster ics//EN"


@dataclass(kw_only=True)
class Event:
    """One event and its per-occurrence overrides, as the admin API describes them."""

    uid: str
    summary: str
    start: datetime
    minutes: int = 30
    rrule: str | None = None
    location: str | None = None
    description: str | None = None
    conference: str | None = None
    cancelled: bool = False
    sequence: int = 0
    #: Original start -> (new start or None when cancelled, sequence).
    overrides: dict[datetime, tuple[datetime | None, int]] = field(default_factory=dict)


@dataclass(kw_only=True)
class Calendar:
    events: dict[str, Event] = field(default_factory=dict)
    #: Text given with PUT, served as is instead of the events.
    raw: str | None = None
    changed_at: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)

    def render(self) -> bytes:
        if self.raw is not None:
            return self.raw.encode()
        calendar = icalendar.Calendar()
        calendar.add("prodid", PRODID)
        calendar.add("version", "2.0")
        for event in self.events.values():
            # Overrides first: some servers list them before their master, and readers must cope.
            for original, (start, sequence) in event.overrides.items():
                calendar.add_component(_override(event, original, start, sequence))
            calendar.add_component(_component(event))
        calendar.add_missing_timezones()
        return bytes(calendar.to_ical())


def _component(event: Event) -> icalendar.Event:
    component = icalendar.Event()
    component.add("uid", event.uid)
    component.add("dtstamp", datetime(2026, 1, 1, tzinfo=UTC))
    component.add("summary", event.summary)
    component.add("dtstart", event.start)
    component.add("dtend", event.start + timedelta(minutes=event.minutes))
    component.add("sequence", event.sequence)
    if event.rrule:
        component.add("rrule", icalendar.vRecur.from_ical(event.rrule))
    for name, value in (("location", event.location), ("description", event.description)):
        if value:
            component.add(name, value)
    if event.conference:
        component.add("x-google-conference", event.conference)
    if event.cancelled:
        component.add("status", "CANCELLED")
    return component


def _override(event: Event, original: datetime, start: datetime | None, sequence: int) -> icalendar.Event:
    component = _component(event)
    component.pop("RRULE", None)
    component.add("recurrence-id", original)
    if start is not None:
        for name in ("DTSTART", "DTEND"):
            del component[name]
        component.add("dtstart", start)
        component.add("dtend", start + timedelta(minutes=event.minutes))
    else:
        component.add("status", "CANCELLED")
    del component["SEQUENCE"]
    component.add("sequence", sequence)
    return component


class BadRequest(ValueError):
    pass


def parse_time(text: object, tzid: object = None) -> datetime:
    """`2026-03-02T09:00:00` in `tzid`, or RFC 3339 with an offset (kept in UTC)."""
    if not isinstance(text, str):
        raise BadRequest("times must be strings")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"not a date-time: {text!r}") from None
    if moment.tzinfo is None:
        if not isinstance(tzid, str):
            raise BadRequest(f"{text!r} has no offset: give tzid")
        return moment.replace(tzinfo=ZoneInfo(tzid))
    return moment.astimezone(UTC)


class IcsServer(AppServer):
    """The ICS server in-process: ``async with IcsServer() as server: server.feed_url("team")``.

    :meth:`add_event`, :meth:`move`, :meth:`cancel`, :meth:`remove`, :meth:`put` and
    :meth:`fail` are what the admin API calls, usable directly from tests.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._calendars: dict[str, Calendar] = {}
        self._fail_status: int | None = None
        self._fail_count: int | None = None
        app = web.Application()
        app.router.add_get("/c/{name}.ics", self._feed)
        app.router.add_put("/admin/c/{name}", self._admin_put)
        app.router.add_post("/admin/c/{name}/events", self._admin_add)
        app.router.add_post("/admin/c/{name}/events/{uid}/move", self._admin_move)
        app.router.add_post("/admin/c/{name}/events/{uid}/cancel", self._admin_cancel)
        app.router.add_delete("/admin/c/{name}/events/{uid}", self._admin_remove)
        app.router.add_post("/admin/fail", self._admin_fail)
        app.router.add_get("/admin/c/{name}/requests", self._admin_requests)
        super().__init__(web.AppRunner(app, shutdown_timeout=1.0, access_log=None), host=host, port=port)

    def feed_url(self, name: str) -> str:
        return f"{self.base_url}/c/{name}.ics"

    # -- operations --------------------------------------------------------------------------------

    def calendar(self, name: str) -> Calendar:
        if name not in self._calendars:
            self._calendars[name] = Calendar(changed_at=self._clock())
        return self._calendars[name]

    def _touch(self, calendar: Calendar) -> None:
        # Last-Modified has whole seconds: a change within the same second must still be newer.
        calendar.changed_at = max(self._clock(), calendar.changed_at + 1.0)

    def put(self, name: str, text: str) -> None:
        calendar = self.calendar(name)
        calendar.raw, calendar.events = text, {}
        self._touch(calendar)

    def add_event(self, name: str, event: Event) -> None:
        calendar = self.calendar(name)
        calendar.raw = None
        calendar.events[event.uid] = event
        self._touch(calendar)

    def move(self, name: str, uid: str, start: datetime, *, recurrence_id: datetime | None = None) -> None:
        calendar, event = self._event(name, uid)
        event.sequence += 1
        if recurrence_id is None:
            event.start = start
        else:
            event.overrides[recurrence_id] = (start, event.sequence)
        self._touch(calendar)

    def cancel(self, name: str, uid: str, *, recurrence_id: datetime | None = None) -> None:
        calendar, event = self._event(name, uid)
        event.sequence += 1
        if recurrence_id is None:
            event.cancelled = True
        else:
            event.overrides[recurrence_id] = (None, event.sequence)
        self._touch(calendar)

    def remove(self, name: str, uid: str) -> None:
        calendar, _ = self._event(name, uid)
        del calendar.events[uid]
        self._touch(calendar)

    def fail(self, status: int | None, *, count: int | None = None) -> None:
        """Answer `status` to the next `count` feed requests (all of them with None); None stops it."""
        self._fail_status, self._fail_count = status, count

    def _event(self, name: str, uid: str) -> tuple[Calendar, Event]:
        calendar = self.calendar(name)
        if uid not in calendar.events:
            raise KeyError(uid)
        return calendar, calendar.events[uid]

    # -- the feed ---------------------------------------------------------------------------------------

    async def _feed(self, request: web.Request) -> web.StreamResponse:
        calendar = self.calendar(request.match_info["name"])
        record: dict[str, Any] = {
            "ifNoneMatch": request.headers.get("If-None-Match"),
            "ifModifiedSince": request.headers.get("If-Modified-Since"),
        }
        calendar.requests.append(record)
        if self._fail_status is not None and self._fail_count != 0:
            if self._fail_count is not None:
                self._fail_count -= 1
            record["status"] = self._fail_status
            return web.Response(status=self._fail_status, text="failing on purpose\n")
        body = calendar.render()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        modified = datetime.fromtimestamp(int(calendar.changed_at), tz=UTC)
        headers = {"ETag": etag, "Last-Modified": format_datetime(modified, usegmt=True)}
        if _not_modified(request, etag, modified):
            record["status"] = 304
            return web.Response(status=304, headers=headers)
        record["status"] = 200
        return web.Response(body=body, headers=headers, content_type="text/calendar", charset="utf-8")

    # -- admin -------------------------------------------------------------------------------------------

    async def _admin_put(self, request: web.Request) -> web.Response:
        self.put(request.match_info["name"], await request.text())
        return web.json_response({"ok": True})

    async def _admin_add(self, request: web.Request) -> web.Response:
        body = await _json(request)
        try:
            tzid = body.get("tzid")
            event = Event(
                uid=_text(body, "uid", required=True) or "",
                summary=_text(body, "summary") or "Meeting",
                start=parse_time(body.get("start"), tzid),
                minutes=int(body.get("minutes", 30)),
                rrule=_text(body, "rrule"),
                location=_text(body, "location"),
                description=_text(body, "description"),
                conference=_text(body, "conference"),
            )
        except (BadRequest, ValueError, TypeError) as problem:
            return _error(400, str(problem))
        self.add_event(request.match_info["name"], event)
        return web.json_response({"ok": True}, status=201)

    async def _admin_move(self, request: web.Request) -> web.Response:
        body = await _json(request)
        name, uid = request.match_info["name"], request.match_info["uid"]
        try:
            tzid = body.get("tzid")
            original = body.get("recurrenceId")
            self.move(
                name,
                uid,
                parse_time(body.get("start"), tzid),
                recurrence_id=parse_time(original, tzid) if original is not None else None,
            )
        except BadRequest as problem:
            return _error(400, str(problem))
        except KeyError:
            return _error(404, f"no event {uid!r}")
        return web.json_response({"ok": True})

    async def _admin_cancel(self, request: web.Request) -> web.Response:
        body = await _json(request)
        name, uid = request.match_info["name"], request.match_info["uid"]
        try:
            original = body.get("recurrenceId")
            self.cancel(name, uid, recurrence_id=parse_time(original, body.get("tzid")) if original else None)
        except BadRequest as problem:
            return _error(400, str(problem))
        except KeyError:
            return _error(404, f"no event {uid!r}")
        return web.json_response({"ok": True})

    async def _admin_remove(self, request: web.Request) -> web.Response:
        try:
            self.remove(request.match_info["name"], request.match_info["uid"])
        except KeyError:
            return _error(404, "no such event")
        return web.json_response({"ok": True})

    async def _admin_fail(self, request: web.Request) -> web.Response:
        body = await _json(request)
        status, count = body.get("status"), body.get("count")
        if not (status is None or isinstance(status, int)) or not (count is None or isinstance(count, int)):
            return _error(400, "status and count must be integers or null")
        self.fail(status, count=count)
        return web.json_response({"ok": True})

    async def _admin_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.calendar(request.match_info["name"]).requests)


def _not_modified(request: web.Request, etag: str, modified: datetime) -> bool:
    match = request.headers.get("If-None-Match")
    if match is not None:
        return etag in [tag.strip() for tag in match.split(",")] or match.strip() == "*"
    since = request.headers.get("If-Modified-Since")
    if since is None:
        return False
    try:
        return modified <= parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False


def _text(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key} must be a non-empty string")
    return value


async def _json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class IcsServerProcess(ServerProcess):
    """The ICS server as a subprocess, with blocking admin calls (``with IcsServerProcess() as server``)."""

    module = "localcluster.ics"
    what = "the ICS server"

    def feed_url(self, name: str) -> str:
        return f"{self.base_url}/c/{name}.ics"

    def add_event(self, calendar: str, **event: Any) -> None:
        self.call("POST", f"/admin/c/{calendar}/events", event)

    def move(self, calendar: str, uid: str, **body: Any) -> None:
        self.call("POST", f"/admin/c/{calendar}/events/{uid}/move", body)

    def cancel(self, calendar: str, uid: str, **body: Any) -> None:
        self.call("POST", f"/admin/c/{calendar}/events/{uid}/cancel", body)

    def fail(self, status: int | None, count: int | None = None) -> None:
        self.call("POST", "/admin/fail", {"status": status, "count": count})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m localcluster.ics", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on, loopback (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--port-file", type=pathlib.Path, help="write the bound port to this file")
    args = parser.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("::1", "localhost"):
        parser.error("the ICS server listens on loopback only")
    asyncio.run(serve(lambda: IcsServer(host=args.host, port=args.port), port_file=args.port_file))


if __name__ == "__main__":
    main()
