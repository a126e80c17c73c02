"""The webhook refuses a spec.notify.url the deliverer's egress policy would refuse, naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from scheduledbot.adapters.egress import EgressPolicy
from scheduledbot.runtime.notify_admission import sink_refusals

ADMITTED = EgressPolicy(admitted_hosts=frozenset({"127.0.0.1:9000"}))


def spec(url: str | None) -> dict[str, Any]:
    notify: dict[str, Any] = {"signingKeySecretRef": {"name": "hooks", "key": "key"}}
    if url is not None:
        notify["url"] = url
    return {"meetingUrl": "https://zoom.us/j/1", "notify": notify}


@pytest.mark.parametrize(
    ("url", "why"),
    [
        pytest.param("http://hooks.example.com/x", "only https is allowed", id="plain http"),
        pytest.param("https://127.0.0.1/x", "127.0.0.1 is loopback", id="loopback literal"),
        pytest.param("https://169.254.169.254/latest", "link-local", id="metadata service"),
        pytest.param("https://10.0.0.7/x", "private", id="a private address"),
        pytest.param("https://hooks/x", "not a fully qualified host name", id="a single-label name"),
        pytest.param("http://127.0.0.1:9001/x", "only https is allowed", id="an admitted host on another port"),
    ],
)
def test_a_sink_the_policy_refuses_is_refused_naming_the_field(url: str, why: str) -> None:
    (refusal,) = sink_refusals(spec(url), ADMITTED)
    assert refusal.startswith("spec.notify.url: ") and why in refusal
    assert "--extra-notify-hosts" in refusal


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://hooks.example.com/bots?token=1", id="https, a public name (resolved at delivery)"),
        pytest.param("http://127.0.0.1:9000/hooks/a", id="a host the administrator admitted"),
        pytest.param(None, id="no url: the default sink"),
    ],
)
def test_a_sink_the_policy_admits_passes(url: str | None) -> None:
    assert sink_refusals(spec(url), ADMITTED) == []


def test_a_spec_without_notify_or_malformed_passes_to_the_schema() -> None:
    assert sink_refusals({"meetingUrl": "x"}, ADMITTED) == []
    assert sink_refusals("not a spec", ADMITTED) == []
    assert sink_refusals({"notify": {"url": 5}}, ADMITTED) == []


def test_the_token_in_a_refused_url_is_not_repeated() -> None:
    (refusal,) = sink_refusals(spec("http://hooks.example.com/x?token=s3cret"), ADMITTED)
    assert "s3cret" not in refusal
