"""Admission rules for BotSchedule that CEL cannot check, and the feed URL's.

Why here and not in the CRD
===========================
CEL holds even while the operator is down, so it checks every shape it can: one
source, a zone name's form, five cron fields, an RRULE's characters, limits.
What needs a library or a database stays here, as a pure function the webhook
calls (and the operator again, as a backstop, when it reads the spec): the zone
exists, the cron expression and the RRULE parse, the rule ever occurs, the
template is a valid ScheduledBot spec, the summary filter compiles; and with
the clock, a cron or rrule schedule that will never occur again.

The feed URL lives in a Secret (it is a credential), so it is checked when the
operator reads it, by `check_feed_url`; its messages never repeat the URL, only
its scheme and host.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

from scheduledbot.api.errors import SpecError
from scheduledbot.api.schedule import ValidRRule, ValidSchedule, parse_schedule_spec
from scheduledbot.core.occurrences import build_rrule
from scheduledbot.timestamps import format_time

MAX_FEED_URL_LENGTH: Final = 4096
_FEED_FORM: Final = "expected an https URL such as https://calendar.example.com/private-.../basic.ics"


def admit_schedule(
    *, operation: str, spec: dict[str, Any], old_spec: dict[str, Any] | None, now: datetime, extra_hosts: frozenset[str]
) -> list[str]:
    """The reasons to reject a CREATE or UPDATE of a BotSchedule; empty to admit it."""
    try:
        valid = parse_schedule_spec(spec, extra_hosts=extra_hosts)
    except SpecError as error:
        return list(error.messages)
    if operation == "CREATE" or old_spec is None or old_spec.get("rrule") != spec.get("rrule"):
        return _clock_rules(valid, now)
    return []


def _clock_rules(valid: ValidSchedule, now: datetime) -> list[str]:
    source = valid.source
    if not isinstance(source, ValidRRule):
        return []  # five cron fields always occur again; a feed's events come and go
    rules = build_rrule(source, valid.zone, near=now)
    if rules.after(now.astimezone(valid.zone)) is None:
        return [
            f"spec.rrule: has no occurrence after now ({format_time(now)}): its COUNT or UNTIL has passed; "
            "extend the rule or delete the BotSchedule"
        ]
    return []


def check_feed_url(url: str, *, extra_hosts: frozenset[str]) -> list[str]:
    """Why `url` (a feed URL read from the Secret) is refused; empty if it may be fetched.

    https only; http is accepted for hosts the administrator allows (`extra_hosts`,
    the same `host` / `host:port` form as for meeting URLs: a local ICS server in
    tests). Where the host resolves is the fetcher's concern (SSRF: loopback,
    link-local and cluster addresses are refused there unless allowed here).
    """
    field = "spec.ical.urlSecretRef"
    if len(url) > MAX_FEED_URL_LENGTH:
        return [f"{field}: the feed URL has more than {MAX_FEED_URL_LENGTH} characters"]
    if any(character.isspace() or character == "\\" for character in url.strip()):
        return [f"{field}: the feed URL contains whitespace or a backslash; {_FEED_FORM}"]
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return [f"{field}: the feed URL is not a valid URL; {_FEED_FORM}"]
    host = (parts.hostname or "").lower()
    if not host:
        return [f"{field}: the feed URL has no host; {_FEED_FORM}"]
    if parts.username is not None or parts.password is not None:
        return [f"{field}: the feed URL must not contain user info (user@host); {_FEED_FORM}"]
    allowed = {entry.lower() for entry in extra_hosts}
    keys = {host, f"[{host}]"} | ({f"{host}:{port}", f"[{host}]:{port}"} if port is not None else set())
    scheme = parts.scheme.lower()
    # webcal: is how calendar apps offer a feed; it is fetched over https.
    if scheme in ("https", "webcal") or (scheme == "http" and keys & allowed):
        return []
    shown = f"{scheme}://{host}" if scheme else host
    return [f"{field}: the feed URL ({shown}/...) is not https; {_FEED_FORM}"]
