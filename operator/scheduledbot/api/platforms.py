"""Which meeting platform a `meetingUrl` points at, and which URLs are refused.

Why a closed list
=================
A bot Pod that is handed a URL it cannot join fails at `joinAt`, hours after
the user could have fixed it. Recognising the platform when the ScheduledBot is
created turns that into an immediate, explained rejection, and the platform is
shown in `status.platform` and `kubectl get`.

Only https is accepted for real platforms: the join link may carry a meeting
password (`?pwd=`). The single exception is `extra_hosts`, an operator setting
that is empty unless an administrator sets it, which admits a local meeting
server (the demo and the end-to-end tests) over http or https.

Why host-based, and strict about the URL's shape
================================================
The host decides, compared exactly or as a dot-separated suffix, never as a
substring (`zoom.us.example.com` is not Zoom). URLs with user info, whitespace
or backslashes are refused: Python and browsers disagree on where the host of
`https://evil.example\\@zoom.us/` is, and the bot would follow the browser.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from scheduledbot.api.errors import FieldError, FieldValueError, quote_value

_FIELD: Final = "spec.meetingUrl"


class Platform(enum.StrEnum):
    """The meeting platform detected from spec.meetingUrl."""

    ZOOM = "zoom"
    GOOGLE_MEET = "google_meet"
    MICROSOFT_TEAMS = "microsoft_teams"
    WEBEX = "webex"
    #: A host the operator's administrator allowed (`extra_hosts`): demos and tests.
    LOCAL = "local"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Rule:
    platform: Platform
    label: str
    #: Shown in messages; what a user should paste.
    example: str
    hosts: frozenset[str]
    #: Any subdomain of these matches too (`us02web.zoom.us`).
    domains: frozenset[str]
    path: re.Pattern[str]

    def owns(self, host: str) -> bool:
        return host in self.hosts or any(host.endswith(f".{domain}") for domain in self.domains)


# Any path but the root: Teams and Webex links come in many shapes
# (/l/meetup-join/..., /meet/<id>, /<site>/j.php?MTID=...), and a wrong one fails
# the same way a wrong meeting id does.
_ANY_PAGE: Final = re.compile(r"/.+")

_RULES: Final = (
    _Rule(
        platform=Platform.ZOOM,
        label="Zoom",
        example="https://zoom.us/j/...",
        hosts=frozenset({"zoom.us", "zoomgov.com"}),
        domains=frozenset({"zoom.us", "zoomgov.com"}),
        path=re.compile(r"/(j/[0-9]+|my/[^/]+)/?", re.ASCII),
    ),
    _Rule(
        platform=Platform.GOOGLE_MEET,
        label="Google Meet",
        example="https://meet.google.com/...",
        hosts=frozenset({"meet.google.com"}),
        domains=frozenset(),
        path=re.compile(r"/[a-z]{3}-[a-z]{4}-[a-z]{3}/?", re.ASCII),
    ),
    _Rule(
        platform=Platform.MICROSOFT_TEAMS,
        label="Microsoft Teams",
        example="https://teams.microsoft.com/...",
        hosts=frozenset({"teams.microsoft.com", "teams.live.com"}),
        domains=frozenset(),
        path=_ANY_PAGE,
    ),
    _Rule(
        platform=Platform.WEBEX,
        label="Webex",
        example="https://*.webex.com/...",
        hosts=frozenset(),
        domains=frozenset({"webex.com"}),
        path=_ANY_PAGE,
    ),
)

#: "Zoom (https://zoom.us/j/...), Google Meet (...), ...": for messages and the CRD's descriptions.
SUPPORTED_PLATFORMS: Final = ", ".join(f"{rule.label} ({rule.example})" for rule in _RULES)

_UNSAFE: Final = re.compile(r"[\s\\]")


class MeetingUrlError(FieldValueError):
    """A `meetingUrl` is not a meeting link of a supported platform."""


def detect_platform(url: str, *, extra_hosts: frozenset[str] = frozenset()) -> Platform:
    """The platform `url` is a meeting link of; `Platform.LOCAL` for an admin-allowed host.

    `extra_hosts` holds hosts (`meet.local`) or host:port pairs (`127.0.0.1:8080`);
    it is the operator's setting and is empty by default.
    """
    parts = _split(url)
    scheme = parts.scheme
    host = parts.hostname or ""
    if scheme in ("http", "https") and not _host_keys(parts).isdisjoint(_lower(extra_hosts)):
        return Platform.LOCAL
    for rule in _RULES:
        if rule.owns(host):
            if scheme != "https":
                raise _error(url, f"is a {rule.label} URL but not https; expected {rule.example}")
            if rule.path.fullmatch(parts.path) is None:
                raise _error(url, f"is a {rule.label} URL but not a meeting link; expected {rule.example}")
            return rule.platform
    raise _error(url, f"is not a supported meeting URL; supported: {SUPPORTED_PLATFORMS}")


def _split(url: str) -> SplitResult:
    if _UNSAFE.search(url):
        raise _error(url, "contains whitespace or a backslash")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port that is not a number in 0..65535
    except ValueError as problem:
        raise _error(url, f"is not a valid URL ({problem})") from None
    if parts.username is not None or parts.password is not None:
        raise _error(url, "must not contain user info (user@host)")
    return parts


def _host_keys(parts: SplitResult) -> frozenset[str]:
    """The spellings an `extra_hosts` entry may use for this URL's host."""
    host = parts.hostname or ""
    bracketed = f"[{host}]" if ":" in host else host  # IPv6, as written in URLs
    keys = {host, bracketed}
    if parts.port is not None:
        keys |= {f"{host}:{parts.port}", f"{bracketed}:{parts.port}"}
    return frozenset(keys - {""})


def _lower(hosts: frozenset[str]) -> frozenset[str]:
    return frozenset(host.lower() for host in hosts)


def _error(url: str, problem: str) -> MeetingUrlError:
    return MeetingUrlError(FieldError(_FIELD, f"{quote_value(url)} {problem}"))


#: Query parameters that change which Zoom meeting (or whether its passcode is given); the rest are tracking.
_ZOOM_KEPT_PARAMETERS: Final = frozenset({"pwd", "tk"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


# Every pass over a schedule compares each occurrence with the namespace's bots: the same few links, many times.
@functools.lru_cache(maxsize=4096)
def normalize_meeting_url(url: str) -> str:
    """`url` in a canonical form, so that equivalent links of one meeting compare equal.

    For comparison only (duplicate detection), never to join with: the scheme and
    host are lower-cased, default ports, fragments, trailing slashes and
    percent-encoding differences dropped; a Zoom link keeps only its meeting id
    and passcode on the bare zoom.us / zoomgov.com host (us02web.zoom.us is the
    same meeting); a Meet link keeps only its lower-cased code. Raises
    `MeetingUrlError` for what `detect_platform` refuses as unsafe.
    """
    parts = _split(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    path = unquote(parts.path).rstrip("/")
    query = sorted(parse_qsl(parts.query, keep_blank_values=True))
    rule = next((rule for rule in _RULES if rule.owns(host)), None)
    if rule is not None and rule.platform is Platform.ZOOM:
        netloc = "zoomgov.com" if host == "zoomgov.com" or host.endswith(".zoomgov.com") else "zoom.us"
        query = [(key, value) for key, value in query if key.lower() in _ZOOM_KEPT_PARAMETERS]
    elif rule is not None and rule.platform is Platform.GOOGLE_MEET:
        path, query = path.lower(), []
    return urlunsplit((scheme, netloc, path, urlencode(query), ""))


# Links in free text (an event's LOCATION or DESCRIPTION) end at whitespace, quotes or angle brackets.
_LINK: Final = re.compile(r"""https?://[^\s<>"'\\]+""", re.IGNORECASE)
_TRAILING: Final = ".,;:!?)]}"


def find_meeting_url(text: str, *, extra_hosts: frozenset[str] = frozenset()) -> str | None:
    """The first link in `text` that is a meeting link of a supported platform (or an allowed host)."""
    for match in _LINK.finditer(text):
        candidate = match.group(0).rstrip(_TRAILING)
        try:
            detect_platform(candidate, extra_hosts=extra_hosts)
        except MeetingUrlError:
            continue
        return candidate
    return None
