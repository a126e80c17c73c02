"""The operator harness itself (localcluster.operator): two instances of one namespace side by
side, and what it does to them (freeze, thaw, kill, restart, stop), checked from outside:
/healthz, /metrics, the process, and the webhook configuration on the API server.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from localcluster.operator import OperatorProcess

pytestmark = pytest.mark.cluster


def test_two_instances_of_one_namespace_run_side_by_side_and_obey_the_harness(
    make_operator: Callable[..., OperatorProcess],
) -> None:
    first, second = make_operator(), make_operator()
    ports = {first.health_port, first.metrics_port, first.webhook_port}
    assert ports.isdisjoint({second.health_port, second.metrics_port, second.webhook_port})
    assert first.webhook_config == second.webhook_config
    # The later start registered the shared configuration with its own port.
    assert first.registered_port() == second.webhook_port
    assert first.metrics().get("scheduledbot_status_writes_total") == 0

    first.pause()
    assert first.health_latency(timeout=1) is None, "a frozen operator does not answer"
    assert second.health_latency(timeout=5) is not None
    first.resume()
    assert first.health_latency(timeout=5) is not None

    pid = second.pid
    second.kill()
    assert not second.alive()
    assert second.registered_port() == second.webhook_port, "a kill cleans nothing up"
    first.close()
    assert first.registered_port() == second.webhook_port, "only its own is removed"

    second.restart()
    assert second.alive() and second.pid != pid
    assert second.registered_port() == second.webhook_port
    assert second.log(None).count("=== harness: starting the operator") == 2
    second.stop()
    assert second.registered_port() is None, "on SIGTERM the operator removes its own"
