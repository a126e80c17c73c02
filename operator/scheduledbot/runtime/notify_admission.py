"""The webhook's look at spec.notify.url: refused when the egress policy would refuse it anyway.

The CRD already demands an http(s) URL with a host; whether it may be reached
depends on the operator's settings (`--extra-notify-hosts`,
`--notify-denied-networks`), so the webhook asks the same policy the deliverer
uses. Host names are not resolved here: their addresses are checked at each
delivery, on the addresses the connection then uses.
"""

from __future__ import annotations

from typing import Any

from scheduledbot.adapters.egress import EgressPolicy, EgressRefused

_EXPECTED = (
    "expected an https URL of a public host (plain http and internal addresses only for hosts the operator's "
    "administrator admitted with --extra-notify-hosts)"
)


def sink_refusals(spec: Any, policy: EgressPolicy) -> list[str]:
    """Why spec.notify.url cannot be a sink, naming the field; empty when it can (or is absent)."""
    notify = spec.get("notify") if isinstance(spec, dict) else None
    url = notify.get("url") if isinstance(notify, dict) else None
    if not isinstance(url, str):
        return []
    try:
        policy.check_url(url)
    except EgressRefused as refused:
        return [f"spec.notify.url: {refused}; {_EXPECTED}"]
    return []
