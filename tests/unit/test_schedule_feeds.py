"""Reading a calendar feed: the Secret's opt-in label, the egress guard, conditional reads, failures.

The feed is served by the local ICS server on loopback and read through the real
egress client (the server's host admitted, as --extra-feed-hosts does); only the
Secret comes from a dict, as the API server would return it.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from localcluster.ics import Event, IcsServer, parse_time
from scheduledbot.adapters.egress import EgressClient, EgressPolicy
from scheduledbot.adapters.kube import ApiError
from scheduledbot.api.review import AdmissionRequest
from scheduledbot.api.schedule import ValidICal, parse_schedule_spec
from scheduledbot.runtime.schedule_feeds import FEED_SECRET_LABEL, FeedReader
from scheduledbot.runtime.schedule_webhook import review_schedule

NOW = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
KEY = ("team", "calendar")


def source(secret: str = "cal") -> ValidICal:
    spec = parse_schedule_spec(
        {
            "timeZone": "Europe/Berlin",
            "ical": {"urlSecretRef": {"name": secret, "key": "url"}},
            "botTemplate": {"spec": {}},
        },
        extra_hosts=frozenset(),
    )
    assert isinstance(spec.source, ValidICal)
    return spec.source


def secret(url: str, *, labelled: bool = True) -> dict[str, Any]:
    labels = {FEED_SECRET_LABEL: "true"} if labelled else {}
    return {"metadata": {"name": "cal", "labels": labels}, "data": {"url": base64.b64encode(url.encode()).decode()}}


class Secrets:
    def __init__(self, **secrets: dict[str, Any]) -> None:
        self.secrets = secrets

    async def read(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.secrets.get(name)


@pytest.fixture
async def server() -> AsyncIterator[IcsServer]:
    async with IcsServer() as server:
        server.add_event(
            "team",
            Event(uid="a@x", summary="Sync", start=parse_time("2026-03-10T09:00:00", "Europe/Berlin"), rrule=None),
        )
        yield server


@pytest.fixture
async def client(server: IcsServer) -> AsyncIterator[EgressClient]:
    async with EgressClient(policy=EgressPolicy(admitted_hosts=frozenset({f"127.0.0.1:{server.port}"}))) as client:
        yield client


async def test_a_feed_is_read_then_read_again_conditionally(server: IcsServer, client: EgressClient) -> None:
    reader = FeedReader(client=client, read_secret=Secrets(cal=secret(server.feed_url("team"))).read)
    first = await reader.read(KEY, "team", source(), NOW)
    assert first.error is None and first.feed is not None and first.fetched_at == NOW
    later = NOW + timedelta(minutes=5)
    second = await reader.read(KEY, "team", source(), later)
    assert second.feed is first.feed, "a 304 keeps the parsed feed: nothing is parsed again"
    assert second.fetched_at == later
    requests = server.calendar("team").requests
    assert [r["status"] for r in requests] == [200, 304]
    assert requests[0]["ifNoneMatch"] is None and requests[1]["ifNoneMatch"]
    assert reader.state(KEY, source()) == second
    assert reader.state(KEY, source("other")) is None, "another Secret is another feed"


async def test_a_failing_feed_keeps_the_last_good_copy_and_counts_the_failures(
    server: IcsServer, client: EgressClient
) -> None:
    reader = FeedReader(client=client, read_secret=Secrets(cal=secret(server.feed_url("team"))).read)
    good = await reader.read(KEY, "team", source(), NOW)
    server.fail(500)
    failed = [await reader.read(KEY, "team", source(), NOW + timedelta(minutes=i)) for i in (1, 2)]
    assert [f.failures for f in failed] == [1, 2]
    assert failed[-1].feed is good.feed and failed[-1].fetched_at == NOW
    assert failed[-1].error is not None and "HTTP 500" in failed[-1].error
    assert server.feed_url("team") not in failed[-1].error, "the URL is a credential: only scheme://host:port"
    server.fail(None)
    again = await reader.read(KEY, "team", source(), NOW + timedelta(minutes=3))
    assert again.error is None and again.failures == 0


@pytest.mark.parametrize(
    ("secrets", "expected"),
    [
        pytest.param({}, "Secret cal (spec.ical.urlSecretRef) does not exist", id="missing"),
        pytest.param({"cal": "UNLABELLED"}, f'does not carry the label {FEED_SECRET_LABEL}: "true"', id="unlabelled"),
        pytest.param({"cal": {"metadata": {"labels": {FEED_SECRET_LABEL: "true"}}}}, "has no key url", id="no-key"),
    ],
)
async def test_a_secret_that_did_not_opt_in_is_never_fetched(
    server: IcsServer, client: EgressClient, secrets: dict[str, Any], expected: str
) -> None:
    if secrets.get("cal") == "UNLABELLED":
        secrets = {"cal": secret(server.feed_url("team"), labelled=False)}
    reader = FeedReader(client=client, read_secret=Secrets(**secrets).read)
    state = await reader.read(KEY, "team", source(), NOW)
    assert state.feed is None and state.error is not None and expected in state.error
    assert server.calendar("team").requests == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("http://calendar.example.com/a.ics", "is not https", id="http"),
        pytest.param("https://127.0.0.1:1/a.ics", "127.0.0.1 is loopback", id="loopback"),
        pytest.param("https://169.254.169.254/latest", "link-local", id="metadata-service"),
        pytest.param("https://user:pw@calendar.example.com/a.ics", "user info", id="user-info"),
    ],
)
async def test_feed_urls_the_guard_refuses(url: str, expected: str) -> None:
    async with EgressClient(policy=EgressPolicy()) as client:
        reader = FeedReader(client=client, read_secret=Secrets(cal=secret(url)).read)
        state = await reader.read(KEY, "team", source(), NOW)
    assert state.error is not None and expected in state.error, state.error
    assert "pw" not in state.error


async def test_redirects_and_oversized_or_unreadable_feeds_are_failures() -> None:
    async def redirect(_: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "http://169.254.169.254/"})

    async def huge(_: web.Request) -> web.Response:
        return web.Response(body=b"X" * (4 * 1024 * 1024 + 10))

    async def garbage(_: web.Request) -> web.Response:
        return web.Response(body=b"BEGIN:VCALENDAR\nthis is not iCalendar\n")

    app = web.Application()
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/huge", huge)
    app.router.add_get("/garbage", garbage)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    cases = (("redirect", "redirects are not followed"), ("huge", "more than"), ("garbage", "not an iCalendar"))
    try:
        async with EgressClient(policy=EgressPolicy(admitted_hosts=frozenset({f"127.0.0.1:{port}"}))) as local:
            for path, expected in cases:
                reader = FeedReader(
                    client=local, read_secret=Secrets(cal=secret(f"http://127.0.0.1:{port}/{path}")).read
                )
                state = await reader.read(KEY, "team", source(), NOW)
                assert state.error is not None and expected in state.error, (path, state.error)
    finally:
        await runner.cleanup()


def review(spec: dict[str, Any], *, operation: str = "CREATE") -> AdmissionRequest:
    return AdmissionRequest.model_validate(
        {
            "uid": "1",
            "kind": {"group": "meetingbots.dev", "version": "v1alpha1", "kind": "BotSchedule"},
            "resource": {"group": "meetingbots.dev", "version": "v1alpha1", "resource": "botschedules"},
            "operation": operation,
            "namespace": "team",
            "name": "s",
            "object": {"metadata": {"name": "s", "namespace": "team"}, "spec": spec},
            "userInfo": {"username": "alice"},
        }
    )


FEED_SPEC = {"timeZone": "UTC", "ical": {"urlSecretRef": {"name": "cal", "key": "url"}}, "botTemplate": {"spec": {}}}


@pytest.mark.parametrize(
    ("spec", "secrets", "expected"),
    [
        pytest.param(
            {"timeZone": "UTC", "cron": "61 9 * * *", "botTemplate": {"spec": {"meetingUrl": "https://zoom.us/j/1"}}},
            {},
            "spec.cron",
            id="cron",
        ),
        pytest.param(FEED_SPEC, {"cal": secret("https://c.example.com/a.ics", labelled=False)}, FEED_SECRET_LABEL),
        pytest.param(FEED_SPEC, {"cal": secret("http://c.example.com/a.ics")}, "is not https"),
        pytest.param(FEED_SPEC, {"cal": secret("https://c.example.com/a.ics")}, None, id="good"),
        pytest.param(FEED_SPEC, {}, None, id="secret-created-later"),
    ],
)
async def test_the_webhook_names_the_field(spec: dict[str, Any], secrets: dict[str, Any], expected: str | None) -> None:
    refusals = await review_schedule(
        review(spec),
        read_secret=Secrets(**secrets).read,
        extra_meeting_hosts=frozenset(),
        extra_feed_hosts=frozenset(),
        now=NOW,
    )
    if expected is None:
        assert refusals == []
    else:
        assert refusals and all(r.startswith("spec.") for r in refusals) and expected in "; ".join(refusals), refusals


async def test_a_feed_secret_the_operator_was_not_granted_names_the_role_to_create(client: EgressClient) -> None:
    async def forbidden(namespace: str, name: str) -> dict[str, Any] | None:
        raise ApiError(403, 'secrets "cal" is forbidden')

    state = await FeedReader(client=client, read_secret=forbidden).read(KEY, "team", source(), NOW)
    assert state.feed is None and state.error is not None
    assert "Secret team/cal may not be read by the operator" in state.error
    assert "resourceNames: [cal]" in state.error and "spec.ical.urlSecretRef" in state.error
