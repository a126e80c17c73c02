"""/metrics listens where `--metrics-listen` says, not on every address; both listen flags default to loopback."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from localcluster.net import free_port
from scheduledbot.runtime import config
from scheduledbot.runtime.metrics import Metrics


def test_metrics_listen_on_the_configured_address_only() -> None:
    port = free_port("127.0.0.2")
    Metrics().serve(port, address="127.0.0.2")
    with urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=5) as answer:
        assert b"scheduledbot_status_writes" in answer.read()
    # Another loopback address of the same machine: nothing listens there.
    with socket.socket() as probe:
        probe.settimeout(2)
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_health_and_metrics_default_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SCHEDULEDBOT_HEALTH_LISTEN", "SCHEDULEDBOT_METRICS_LISTEN"):
        monkeypatch.delenv(name, raising=False)
    settings = config.load([])
    assert (settings.health_listen, settings.metrics_listen) == ("127.0.0.1", "127.0.0.1")
