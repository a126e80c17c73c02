"""The benchmarks' bot Pods: `sleep` as the bot process, its control API played by the harness.

The harness binds each Pod's address itself and answers the bot protocol there, so that a
benchmark measures the operator, not a bot image; the readiness probe reaches that stub.
"""

from __future__ import annotations

from typing import Any


def sleeping_bot(run: str, *, port: int, grace: int, sleep: int, probe: dict[str, int]) -> dict[str, Any]:
    """A Pod template labelled with `run`: `sleep <sleep>`, probed on /v1/ready at `port` with `probe`'s timings."""
    return {
        "metadata": {"labels": {"bench.meetingbots.dev/run": run}},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "containers": [
                {
                    "name": "bot",
                    "image": "bench.local/sleep:1",
                    "command": ["sleep", str(sleep)],
                    "ports": [{"name": "control", "containerPort": port, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/v1/ready", "port": "control"}, **probe},
                }
            ],
        },
    }
