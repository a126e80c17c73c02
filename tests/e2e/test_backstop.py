"""What the operator's own pass refuses, against the real API server: the webhook is not the only door.

A bot may reach the operator without the webhook's review (`failurePolicy: Ignore`
while the operator was down, a removed configuration), its class may go away after
admission, and anyone who may create Pods in the namespace may take the bot Pod's
name first. Each must fail the bot at once, with a reason that names the cause,
instead of retrying until the join deadline. And a bot Pod that answers in bad faith
must neither fail the operator's passes, nor forge its log lines, nor grow its memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.bots import Bots, soon
from localcluster.operator import OperatorProcess

pytestmark = pytest.mark.cluster

#: A bot's control API in bad faith: 400 MB to every state long-poll; to the join, a
#: failure whose reason is 2,000 characters and whose message would forge a log line.
HOSTILE = r"""
import asyncio, json, os
HUGE = 400 * 2**20
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].split(b"?")[0]
            size = [int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
            if size:
                await reader.readexactly(size[0])
            if path == b"/v1/state":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HUGE)
                chunk = b"x" * 2**20
                for _ in range(400):
                    writer.write(chunk)
                    await writer.drain()
                continue
            if path == b"/v1/ready":
                body = b'{"ready": true}'
            else:
                message = "gave up\nFORGED LINE INFO all good\x1b[2J\u202eevil"
                body = json.dumps({"version": 9, "state": "failed", "reason": "R" * 2000, "message": message}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(serve, os.environ["POD_IP"], int(os.environ["BOT_CONTROL_PORT"]))
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def high_water_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_hostile_bot_cannot_fail_passes_forge_log_lines_or_grow_the_operator(
    operator: OperatorProcess, bots: Bots
) -> None:
    join_at = soon(25)
    hostile = {"spec": {"containers": [{"name": "bot", "image": "hostile:1", "command": ["python", "-c", HOSTILE]}]}}
    bots.apply(bots.manifest("hostile", join_at=join_at, lead=24, template=hostile))
    bots.apply(bots.manifest("neighbour", join_at=join_at, lead=24))
    failed = bots.wait_state("hostile", "failed", timeout=60)
    # Its neighbour joined by the operator's signal (not by its own deadline): the hostile bot
    # held up no one. Waiting on joinedBy, not on a state: joined may pass within a long-poll.
    neighbour = bots.wait_for("neighbour", ".status.joinedBy", "signal", timeout=30)
    assert neighbour["state"] in ("joining", "joined", "recording")
    # The reason status would refuse became part of the message; its control characters are escaped.
    assert failed["reason"] == "BotFailed"
    assert "gave up\\u000aFORGED LINE" in failed["message"] and "\n" not in failed["message"]
    assert "\x1b" not in failed["message"] and "\u202e" not in failed["message"]
    log = operator.log()
    assert "Traceback" not in log
    assert not [line for line in log.splitlines() if line.startswith("FORGED LINE")]
    # Four hundred megabytes offered on every long-poll; the operator read 64 KiB of each.
    assert high_water_mb(operator.pid) < 350


def test_a_bot_the_webhook_never_saw_fails_at_staging_by_the_template_rules(
    make_operator: Callable[..., OperatorProcess], bots: Bots
) -> None:
    make_operator(webhook=False)
    template = {"spec": {"hostNetwork": True, "containers": [{"name": "bot", "image": "x:1"}]}}
    bots.apply(bots.manifest("unreviewed", join_at=soon(60), lead=58, template=template))
    status = bots.wait_state("unreviewed", "failed", timeout=30)
    assert status["reason"] == "InvalidTemplate"
    assert "spec.template.spec.hostNetwork: not allowed (Pod Security baseline: host namespaces)" in status["message"]
    assert bots.pods() == []


def test_a_foreign_pod_under_the_bots_pod_name_is_never_adopted(operator: OperatorProcess, bots: Bots) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "taken-bot", "namespace": bots.namespace},
        "spec": {"containers": [{"name": "c", "image": "x:1", "command": ["sleep", "60"]}]},
    }
    bots.cluster.kubectl("apply", "-f", "-", input=json.dumps(foreign))
    bots.apply(bots.manifest("taken", join_at=soon(60), lead=58))
    status = bots.wait_state("taken", "failed", timeout=30)
    assert status["reason"] == "NameConflict"
    assert "'taken-bot' already exists and was not created by the operator" in status["message"]
    pod = json.loads(bots.cluster.kubectl("get", "pod", "taken-bot", "-n", bots.namespace, "-o", "json").stdout)
    assert not pod["metadata"].get("ownerReferences"), "the foreign Pod was left as it was"


@pytest.fixture
def bot_class(bots: Bots) -> Iterator[str]:
    name = f"vanishing-{bots.namespace}"
    body = {"apiVersion": "meetingbots.dev/v1alpha1", "kind": "BotClass", "metadata": {"name": name}, "spec": {}}
    bots.cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    yield name
    bots.cluster.kubectl("delete", "botclass", name, "--ignore-not-found")


def test_a_bot_whose_class_was_deleted_after_admission_fails_naming_it(
    operator: OperatorProcess, bots: Bots, bot_class: str
) -> None:
    bots.apply(bots.manifest("orphan", join_at=soon(30), lead=20, botClassName=bot_class))
    bots.wait_state("orphan", "scheduled", timeout=15)
    bots.cluster.kubectl("delete", "botclass", bot_class)
    status: dict[str, Any] = bots.wait_state("orphan", "failed", timeout=30)
    assert status["reason"] == "BotClassNotFound"
    assert f'spec.botClassName: BotClass "{bot_class}" does not exist' in status["message"]
    assert bots.pods() == []
