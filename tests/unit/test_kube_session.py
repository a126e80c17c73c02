"""The API client's session asks the environment once, at start-up, not per request (adapters/kube.py)."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from scheduledbot.adapters.kube import _no_lookups_per_request

API_SERVER = "https://10.96.0.1:443"


@pytest.mark.parametrize(
    ("environment", "per_request"),
    [
        ({}, False),
        ({"HTTPS_PROXY": "http://proxy.example:3128"}, True),
        ({"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "10.96.0.1"}, False),
        ({"HTTP_PROXY": "http://proxy.example:3128"}, False),
    ],
    ids=["no proxy", "a proxy for https", "the API server bypassed", "a proxy for http only"],
)
async def test_the_environment_is_asked_per_request_only_with_a_proxy_for_the_api_server(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], per_request: bool
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    configuration = client.Configuration(host=API_SERVER)
    api = client.ApiClient(configuration)
    try:
        assert api.rest_client.pool_manager.trust_env  # kubernetes_asyncio's own choice
        _no_lookups_per_request(api)
        assert api.rest_client.pool_manager.trust_env is per_request
    finally:
        await api.close()
