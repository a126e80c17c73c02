"""The local webhook receiver (tools/localcluster/receiver.py), in-process and as a subprocess with its admin API."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from localcluster.receiver import Answer, WebhookReceiver, WebhookReceiverProcess
from scheduledbot.adapters.notify import signature_headers
from scheduledbot.api.notify import parse_signing_key

pytestmark = pytest.mark.timeout(30)
TOOLS = str(Path(__file__).resolve().parents[2] / "tools")


def signed(key: str, message_id: str, body: bytes) -> dict[str, str]:
    headers = signature_headers(
        key=parse_signing_key(key, source="test"), message_id=message_id, timestamp=datetime.now(UTC), body=body
    )
    return {"Content-Type": "application/cloudevents+json", **headers}


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_receiver_process_verifies_records_and_answers_as_scripted() -> None:
    with WebhookReceiverProcess() as receiver:
        url = receiver.url("team-standup")
        body = b'{"specversion": "1.0", "id": "u.1"}'
        receiver.script(Answer(status=500), Answer(status=429, retry_after="3"))
        statuses = [post(url, body, signed(receiver.key, "u.1", body)) for _ in range(3)]
        assert statuses == [500, 429, 200]
        assert post(url, body, {**signed(receiver.key, "u.1", body), "webhook-signature": "v1,AAAA"}) == 401
        [delivery] = receiver.deliveries(count=1, timeout=5)
        assert (delivery["id"], delivery["verified"], delivery["path"]) == ("u.1", True, "/hooks/team-standup")
        assert delivery["event"] == {"specversion": "1.0", "id": "u.1"}
        assert [(a["status"], a["verified"]) for a in receiver.attempts()] == [
            (500, True),
            (429, True),
            (200, True),
            (401, False),
        ]
        receiver.reset()
        assert receiver.attempts() == []
        process = receiver._process
        assert process is not None
    assert process.poll() is not None  # stopped, nothing left behind


async def test_waiting_for_deliveries_returns_as_soon_as_they_arrive() -> None:
    async with WebhookReceiver() as receiver, aiohttp.ClientSession() as http:
        waiting = asyncio.create_task(receiver.wait_for(1, timeout=10))
        await asyncio.sleep(0)
        assert not waiting.done()
        body = b"{}"
        async with http.post(receiver.url(), data=body, headers=signed(receiver.key, "a.1", body)) as response:
            assert response.status == 200
        [delivery] = await asyncio.wait_for(waiting, timeout=5)
        assert delivery["id"] == "a.1"


async def test_stopping_releases_a_hanging_answer() -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    receiver.script(Answer(hang=True))
    body = b"{}"
    async with aiohttp.ClientSession() as http:
        hanging = asyncio.create_task(http.post(receiver.url(), data=body, headers=signed(receiver.key, "h.1", body)))
        await receiver.wait_for_attempts(1, timeout=5)
        await asyncio.wait_for(receiver.stop(), timeout=5)
        try:
            response = await asyncio.wait_for(hanging, timeout=5)
            response.release()
        except aiohttp.ClientError:
            pass  # the server may close the connection instead of answering: either way, it did not hang
    assert receiver.attempts[0]["hang"] is True


async def test_a_bad_script_is_refused_by_the_admin_api() -> None:
    async with WebhookReceiver() as receiver, aiohttp.ClientSession() as http:
        bad: list[dict[str, Any]] = [{"answers": [{"status": 99}]}, {"answers": [{"retryAfter": 3}]}, {"nope": []}]
        for doc in bad:
            async with http.post(f"{receiver.base_url}/admin/script", json=doc) as response:
                assert response.status == 400
        async with http.post(f"{receiver.base_url}/admin/script", json={"answers": [{"status": 410}]}) as response:
            assert (await response.json())["script"] == [{"status": 410, "retryAfter": None, "hang": False}]


def test_the_command_prints_its_url_and_the_key_it_made_up() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "localcluster.receiver", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": TOOLS, "PATH": "/usr/bin:/bin"},
    )
    try:
        assert process.stdout is not None
        url, key = process.stdout.readline().strip(), process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and key.startswith("whsec_")
        assert parse_signing_key(key, source="printed")
    finally:
        process.terminate()
        process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
