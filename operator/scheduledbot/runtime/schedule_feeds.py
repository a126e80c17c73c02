"""Reading a BotSchedule's calendar feed: the URL from its Secret, the feed through the egress guard.

Why the Secret must opt in
==========================
The operator may read Secrets in every namespace it watches (bot tokens), so a
tenant who names a Secret in `urlSecretRef` could make it read one it cannot read
itself: a registry credential, a database password, sent as a feed URL to a
host the tenant controls. Only a Secret labelled
`meetingbots.dev/calendar-feed: "true"` is read as a feed; any other gets a
clear `SourceHealthy=False` and is never fetched.

Fetching
========
Through `adapters.egress` (https only, no loopback, link-local, private or
cluster addresses unless the administrator admits the host with
`--extra-feed-hosts`; timeouts; no redirects; at most `MAX_FEED_BYTES` read),
with `If-None-Match` / `If-Modified-Since` from the last answer, so an
unchanged feed costs a 304 and no parsing. A failure keeps the last good feed
(the planner then creates and moves children but deletes none) and names its
cause; the planner computes when to try again. The URL is a credential: it
never appears in status, Events or logs, only `scheme://host:port`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from scheduledbot.adapters.egress import EgressClient, EgressError, EgressRefused, redact
from scheduledbot.adapters.kube import ApiError, denied_secret
from scheduledbot.api.schedule import ValidICal
from scheduledbot.core.occurrences import MAX_FEED_BYTES, Feed, FeedError, parse_feed
from scheduledbot.core.schedule_admission import check_feed_url
from scheduledbot.core.schedule_model import FeedState

#: The label a Secret needs before the operator reads it as a calendar feed URL.
FEED_SECRET_LABEL: Final = "meetingbots.dev/calendar-feed"
_ACCEPT: Final = "text/calendar, text/plain;q=0.5, */*;q=0.1"
#: Reads that need the parser at once (in threads: a large feed must not stall the event loop's joins).
_CONCURRENT_PARSES: Final = 2

Key = tuple[str, str]
ReadSecret = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]


class FeedProblem(Exception):
    """The feed cannot be read; the message is safe for status (it never holds the URL)."""


@dataclass(frozen=True, slots=True)
class _Cached:
    #: (secret name, key): another reference starts over.
    ref: tuple[str, str]
    #: SHA-256 of the URL: a URL changed in the Secret drops the validators of the old one.
    url_digest: str | None
    etag: str | None
    last_modified: str | None
    state: FeedState


class FeedReader:
    """The feeds of the ical schedules, by schedule: the last good copy, its validators, the last failure."""

    def __init__(self, *, client: EgressClient, read_secret: ReadSecret) -> None:
        self._client = client
        self._read_secret = read_secret
        self._cache: dict[Key, _Cached] = {}
        self._parsing = asyncio.Semaphore(_CONCURRENT_PARSES)

    def state(self, key: Key, source: ValidICal) -> FeedState | None:
        """What is known of the feed `source` names for the schedule `key`; None before its first read."""
        cached = self._cache.get(key)
        if cached is None or cached.ref != (source.secret_name, source.secret_key):
            return None
        return cached.state

    def forget(self, key: Key) -> None:
        self._cache.pop(key, None)

    async def read(self, key: Key, namespace: str, source: ValidICal, now: datetime) -> FeedState:
        """Read the feed once (a conditional GET when it was read before) and remember the outcome."""
        ref = (source.secret_name, source.secret_key)
        cached = self._cache.get(key)
        if cached is None or cached.ref != ref:
            cached = _Cached(ref=ref, url_digest=None, etag=None, last_modified=None, state=FeedState(feed=None))
        try:
            url = await self._url(namespace, source)
            digest = hashlib.sha256(url.encode()).hexdigest()
            if digest != cached.url_digest:
                cached = replace(cached, url_digest=digest, etag=None, last_modified=None)
            cached = await self._fetch(cached, url, now)
        except FeedProblem as problem:
            previous = cached.state
            state = replace(previous, error=str(problem)[:1024], attempted_at=now, failures=previous.failures + 1)
            cached = replace(cached, state=state)
        self._cache[key] = cached
        return cached.state

    async def _url(self, namespace: str, source: ValidICal) -> str:
        name, key = source.secret_name, source.secret_key
        try:
            secret = await self._read_secret(namespace, name)
        except ApiError as error:
            raise FeedProblem(f"{denied_secret(namespace, name, error)} (spec.ical.urlSecretRef)") from None
        if secret is None:
            raise FeedProblem(f"Secret {name} (spec.ical.urlSecretRef) does not exist in namespace {namespace}")
        return feed_url_from_secret(secret, name=name, key=key, extra_hosts=self._client.policy.admitted_hosts)

    async def _fetch(self, cached: _Cached, url: str, now: datetime) -> _Cached:
        headers = {"Accept": _ACCEPT}
        if cached.state.feed is not None:
            if cached.etag:
                headers["If-None-Match"] = cached.etag
            if cached.last_modified:
                headers["If-Modified-Since"] = cached.last_modified
        try:
            answer = await self._client.request("GET", url, headers=headers, max_body_bytes=MAX_FEED_BYTES)
        except (EgressRefused, EgressError) as error:
            raise FeedProblem(f"the feed cannot be fetched: {error}") from None
        where = redact(url)
        if answer.status == 304 and cached.state.feed is not None:
            return replace(cached, state=_read_at(cached.state.feed, now))
        if 300 <= answer.status < 400:
            raise FeedProblem(
                f"{where} answered {answer.status} (a redirect): redirects are not followed; "
                "put the feed's new URL in the Secret"
            )
        if answer.status != 200:
            raise FeedProblem(f"{where} answered HTTP {answer.status}")
        if answer.truncated:
            raise FeedProblem(f"{where}: the feed has more than {MAX_FEED_BYTES} bytes")
        try:
            async with self._parsing:
                feed = await asyncio.to_thread(parse_feed, answer.body)
        except FeedError as error:
            raise FeedProblem(f"{where}: {error}") from None
        return replace(
            cached,
            etag=_header(answer.headers, "etag"),
            last_modified=_header(answer.headers, "last-modified"),
            state=_read_at(feed, now),
        )


def _read_at(feed: Feed, now: datetime) -> FeedState:
    return FeedState(feed=feed, fetched_at=now, error=None, attempted_at=now, failures=0)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A validator to send back, if it is a sane one (it goes into the next request's headers)."""
    value = headers.get(name)
    if value is None or len(value) > 256 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return None
    return value


def feed_url_from_secret(secret: Mapping[str, Any], *, name: str, key: str, extra_hosts: frozenset[str]) -> str:
    """The feed URL a Secret holds, if it opted in and the URL may be fetched; `FeedProblem` says why not."""
    labels = (secret.get("metadata") or {}).get("labels") or {}
    if labels.get(FEED_SECRET_LABEL) != "true":
        raise FeedProblem(
            f'Secret {name} does not carry the label {FEED_SECRET_LABEL}: "true"; the operator reads only '
            "Secrets labelled as calendar feeds (label it if it holds the feed URL)"
        )
    encoded = (secret.get("data") or {}).get(key)
    if not isinstance(encoded, str):
        raise FeedProblem(f"Secret {name} has no key {key} (spec.ical.urlSecretRef.key)")
    try:
        url = base64.b64decode(encoded, validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        raise FeedProblem(f"Secret {name}, key {key}: not a UTF-8 URL") from None
    problems = check_feed_url(url, extra_hosts=extra_hosts)
    if problems:
        raise FeedProblem(
            f"Secret {name}, key {key}: " + "; ".join(p.removeprefix("spec.ical.urlSecretRef: ") for p in problems)
        )
    # webcal: is how calendar apps offer a feed; it is https underneath.
    if url[:7].lower() == "webcal:":
        url = "https:" + url[7:]
    return url
