"""Smoke test of the benchmark harness (bench/): one run of two bots, end to end.

It asserts what the harness saw happen (every join stamped by the stub, the naive
baseline's too, a whole lifecycle, the operator's requests counted on the API server),
never how fast: benchmarks report figures, tests do not time anything.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import pytest

from bench.kube import Kube
from bench.precision import PrecisionPhase, RunResult
from localcluster.testing import Cluster

pytestmark = pytest.mark.cluster

#: Not the bench's own port, so that a `make bench` running meanwhile is not disturbed.
SMOKE_PORT = 18191


def test_one_small_run_is_measured_end_to_end(cluster: Cluster, crd: None, tmp_path: Path) -> None:
    async def run() -> tuple[list[RunResult], list[dict[str, list[float]]]]:
        kubeconfig = Path(cluster.kubeconfig)
        kube = await Kube.connect(kubeconfig)
        try:
            phase = PrecisionPhase(
                kube=kube,
                kubeconfig=kubeconfig,
                out=tmp_path,
                run_id=f"smoke{secrets.token_hex(2)}",
                sizes=[2],
                runs={2: 1},
                deadline=time.time() + 600,
                stub_port=SMOKE_PORT,
                lead_base=3,
                namespace_timeout=20,
                floor_samples=10,
            )
            return await phase.run(), phase.floor
        finally:
            await kube.close()

    results, floor = asyncio.run(run())
    [result] = results
    assert result.not_ready == 0
    # Both operator joins and both naive joins reached the stub, which stamped them.
    assert len(result.bot) == 2 and result.missing_bot == 0
    assert len(result.bot_kernel) == 2  # the kernel's receive stamps came with them
    assert len(result.naive) == 2 and result.missing_naive == 0
    # The operator recorded its signal on both bots; the stub then walked them to `ended`.
    assert len(result.operator) == 2
    assert result.lifecycle_ok
    # The API server counted the operator's own requests: its status writes are the ones
    # our watch saw (no write without a change), and the finalizer came and went.
    assert result.apf["status"] == result.watched["status"] >= 5
    assert result.apf["bot-writes"] == result.watched["finalizers"] == 2
    assert {"Scheduled", "Staged", "JoinSignaled", "Joined", "Ended"} <= set(result.events)
    assert [(len(f["read"]), len(f["kernel"])) for f in floor] == [(10, 10), (10, 10)]
