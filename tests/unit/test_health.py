"""/healthz answers from its own thread, and says when the operator's loop has stopped running.

Real HTTP on loopback; the event loop is blocked on purpose (a synchronous sleep in a
coroutine) to stand for a pass that never yields. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest

from scheduledbot.runtime.health import HealthServer, LoopHealth


def probe(port: int, path: str = "/healthz") -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
async def server() -> AsyncIterator[HealthServer]:
    health = LoopHealth(asyncio.get_running_loop(), stall_seconds=0.3)
    served = HealthServer(health, host="127.0.0.1", port=0)
    served.start()
    yield served
    served.stop()


async def test_a_running_loop_is_healthy(server: HealthServer) -> None:
    status, body = await asyncio.to_thread(probe, server.port)
    assert (status, body["loop"]) == (200, "ok")
    await asyncio.sleep(0.01)  # the posted callback runs
    status, body = await asyncio.to_thread(probe, server.port)
    assert status == 200
    assert isinstance(body["lagSeconds"], float)


async def test_a_blocked_loop_gets_answers_and_they_say_so_then_it_recovers(server: HealthServer) -> None:
    answers: list[tuple[int, dict[str, object]]] = []

    def probes() -> None:
        for _ in range(4):
            answers.append(probe(server.port))
            time.sleep(0.2)

    prober = threading.Thread(target=probes)
    prober.start()
    time.sleep(1.0)  # noqa: ASYNC251 (the point: the loop is blocked, yet the probes are answered)
    prober.join(timeout=5)
    assert len(answers) == 4
    assert answers[0][0] == 200
    assert answers[-1][0] == 503
    assert "no callback has run" in str(answers[-1][1]["loop"])
    await asyncio.sleep(0.01)
    status, _ = await asyncio.to_thread(probe, server.port)
    assert status == 200


async def test_other_paths_are_not_found(server: HealthServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{server.port}/metrics", timeout=2)
    assert raised.value.code == 404
