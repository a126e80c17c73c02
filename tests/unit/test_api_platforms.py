"""meetingUrl: which URLs name which platform, and how the others are refused."""

from __future__ import annotations

import pytest

from scheduledbot.api.platforms import SUPPORTED_PLATFORMS, MeetingUrlError, Platform, detect_platform

LOCAL = frozenset({"127.0.0.1:8080", "Meet.Local", "[::1]:9000"})

DETECTED = [
    pytest.param("https://zoom.us/j/123456789", frozenset(), Platform.ZOOM, id="a Zoom join link"),
    pytest.param(
        "https://us02web.zoom.us/j/85012345678?pwd=abc.1",
        frozenset(),
        Platform.ZOOM,
        id="a Zoom subdomain with a password",
    ),
    pytest.param("https://zoom.us/my/alice", frozenset(), Platform.ZOOM, id="a Zoom personal room"),
    pytest.param("https://zoom.us/j/123/", frozenset(), Platform.ZOOM, id="a Zoom link with a trailing slash"),
    pytest.param("https://ZOOM.US/j/123", frozenset(), Platform.ZOOM, id="an uppercase host"),
    pytest.param("https://zoomgov.com/j/1612345678", frozenset(), Platform.ZOOM, id="Zoom for Government"),
    pytest.param(
        "https://agency.zoomgov.com/j/1612345678", frozenset(), Platform.ZOOM, id="a Zoom for Government subdomain"
    ),
    pytest.param("https://meet.google.com/gvy-zzra-ktd", frozenset(), Platform.GOOGLE_MEET, id="a Google Meet code"),
    pytest.param(
        "https://meet.google.com/gvy-zzra-ktd?authuser=1",
        frozenset(),
        Platform.GOOGLE_MEET,
        id="a Google Meet code with a query",
    ),
    pytest.param(
        "https://teams.microsoft.com/l/meetup-join/19%3ameeting_N2E%40thread.v2/0?context=%7b%22Tid%22%3a%22x%22%7d",
        frozenset(),
        Platform.MICROSOFT_TEAMS,
        id="a Teams meetup-join link",
    ),
    pytest.param(
        "https://teams.microsoft.com/meet/2345678901?p=abc",
        frozenset(),
        Platform.MICROSOFT_TEAMS,
        id="a Teams meeting-id link",
    ),
    pytest.param(
        "https://teams.live.com/meet/9312345678", frozenset(), Platform.MICROSOFT_TEAMS, id="a Teams personal link"
    ),
    pytest.param("https://acme.webex.com/meet/alice", frozenset(), Platform.WEBEX, id="a Webex personal room"),
    pytest.param(
        "https://acme.webex.com/acme/j.php?MTID=m0123", frozenset(), Platform.WEBEX, id="a Webex meeting link"
    ),
    pytest.param("http://127.0.0.1:8080/meetings/1", LOCAL, Platform.LOCAL, id="an admitted host:port over http"),
    pytest.param("https://127.0.0.1:8080/meetings/1", LOCAL, Platform.LOCAL, id="an admitted host:port over https"),
    pytest.param("http://meet.local/m/1", LOCAL, Platform.LOCAL, id="an admitted host, matched without case"),
    pytest.param("http://meet.local:8000/m/1", LOCAL, Platform.LOCAL, id="an admitted host on any port"),
    pytest.param("http://[::1]:9000/m/1", LOCAL, Platform.LOCAL, id="an admitted IPv6 host:port"),
]

REFUSED = [
    pytest.param("https://example.com/x", frozenset(), "is not a supported meeting URL", id="an unknown host"),
    pytest.param("", frozenset(), "is not a supported meeting URL", id="an empty string"),
    pytest.param("zoom.us/j/1", frozenset(), "is not a supported meeting URL", id="a URL without a scheme"),
    pytest.param("http://zoom.us/j/123", frozenset(), "is a Zoom URL but not https", id="Zoom over http"),
    pytest.param("https://zoom.us/", frozenset(), "is a Zoom URL but not a meeting link", id="the Zoom home page"),
    pytest.param(
        "https://zoom.us/j/abc",
        frozenset(),
        "is a Zoom URL but not a meeting link",
        id="a Zoom id that is not a number",
    ),
    pytest.param(
        "https://zoom.us.example.com/j/1",
        frozenset(),
        "is not a supported meeting URL",
        id="zoom.us as a subdomain of another host",
    ),
    pytest.param(
        "https://notzoom.us/j/1", frozenset(), "is not a supported meeting URL", id="a host that only ends in zoom.us"
    ),
    pytest.param(
        "https://meet.google.com/",
        frozenset(),
        "is a Google Meet URL but not a meeting link",
        id="the Google Meet home page",
    ),
    pytest.param(
        "https://meet.google.com/lookup/abc",
        frozenset(),
        "is a Google Meet URL but not a meeting link",
        id="a Google Meet lookup link",
    ),
    pytest.param(
        "https://teams.microsoft.com",
        frozenset(),
        "is a Microsoft Teams URL but not a meeting link",
        id="the Teams home page",
    ),
    pytest.param(
        "https://webex.com/meet/alice", frozenset(), "is not a supported meeting URL", id="Webex without a site"
    ),
    pytest.param(
        "https://acme.webex.com/", frozenset(), "is a Webex URL but not a meeting link", id="a Webex site's home page"
    ),
    pytest.param(
        "https://zoom.us@evil.example/j/1",
        frozenset(),
        "must not contain user info",
        id="user info before another host",
    ),
    pytest.param(
        "https://evil.example\\@zoom.us/j/1",
        frozenset(),
        "contains whitespace or a backslash",
        id="a backslash that browsers read as a slash",
    ),
    pytest.param(" https://zoom.us/j/1", frozenset(), "contains whitespace or a backslash", id="leading whitespace"),
    pytest.param("https://zoom.us:99999/j/1", frozenset(), "is not a valid URL", id="a port out of range"),
    pytest.param(
        "http://127.0.0.1:8080/m/1",
        frozenset(),
        "is not a supported meeting URL",
        id="a local server when no host is admitted",
    ),
    pytest.param(
        "http://127.0.0.1:9090/m/1", LOCAL, "is not a supported meeting URL", id="an admitted host on another port"
    ),
    pytest.param("ftp://meet.local/m/1", LOCAL, "is not a supported meeting URL", id="an admitted host over ftp"),
]


@pytest.mark.parametrize(("url", "extra_hosts", "platform"), DETECTED)
def test_detect_platform(url: str, extra_hosts: frozenset[str], platform: Platform) -> None:
    assert detect_platform(url, extra_hosts=extra_hosts) is platform


@pytest.mark.parametrize(("url", "extra_hosts", "problem"), REFUSED)
def test_detect_platform_refuses(url: str, extra_hosts: frozenset[str], problem: str) -> None:
    with pytest.raises(MeetingUrlError) as caught:
        detect_platform(url, extra_hosts=extra_hosts)
    assert str(caught.value).startswith("spec.meetingUrl: ")
    assert problem in str(caught.value)
    assert caught.value.error.path == "spec.meetingUrl"


def test_an_unsupported_url_is_told_what_is_supported() -> None:
    with pytest.raises(MeetingUrlError) as caught:
        detect_platform("https://example.com/x")
    assert str(caught.value) == (
        'spec.meetingUrl: "https://example.com/x" is not a supported meeting URL; supported: '
        "Zoom (https://zoom.us/j/...), Google Meet (https://meet.google.com/...), "
        "Microsoft Teams (https://teams.microsoft.com/...), Webex (https://*.webex.com/...)"
    )


def test_a_wrong_link_of_a_known_platform_shows_the_expected_form() -> None:
    with pytest.raises(MeetingUrlError, match=r"expected https://zoom\.us/j/\.\.\.$"):
        detect_platform("https://zoom.us/")


def test_no_host_is_admitted_by_default() -> None:
    with pytest.raises(MeetingUrlError):
        detect_platform("http://localhost:8080/m/1")


def test_the_supported_list_names_every_real_platform() -> None:
    for label in ("Zoom", "Google Meet", "Microsoft Teams", "Webex"):
        assert label in SUPPORTED_PLATFORMS


def test_platform_values_are_what_status_shows() -> None:
    assert [platform.value for platform in Platform] == ["zoom", "google_meet", "microsoft_teams", "webex", "local"]
