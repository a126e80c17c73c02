"""`python -m bench.hostile [--bots 100]`: the operator's memory with hostile bots beside normal ones.

Two runs on the local cluster (`make cluster`), each with a fresh operator process:

- `normal`: N bots whose control API answers as bot protocol v1 says;
- `hostile`: N bots that answer in bad faith, a quarter each: a 400 MB state answer
  (and join answer) streamed as fast as the socket takes it; a failure whose reason
  is 2,000 characters and whose message carries a newline, ESC and a bidi override;
  a flood of headers; no answer at all (the connection is held open).

Each bot Pod is `sleep` (the fake kubelet runs it as a local process); this one
process plays every bot's control API on the Pod's loopback address, as
bench/stub.py does, binding each address as its Pod gets it. The bots are staged
at once and join 90 s later, so the operator follows each bot's state
(long-poll) meanwhile, signals the join, and follows again.

Reported per run: the operator's RSS before the bots, its peak while they run
(sampled every 0.2 s, and the kernel's high-water mark VmHWM), the bots' final
states, and how many tracebacks the operator logged. Prints one JSON document.

`--operator-source DIR` runs the operator from another checkout's `operator/`
(`git archive REV operator | tar -x -C DIR`), for a figure before a change. Keep
`--bots` small there: an operator without the bounded read takes each 400 MB
answer whole.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.pods import sleeping_bot
from localcluster.cluster import DEFAULT_LAYOUT
from localcluster.kubectl import kubectl
from localcluster.operator import OperatorProcess

PORT: Final = 18383
HUGE: Final = 400 * 1024 * 1024
CHUNK: Final = b"x" * (1 << 20)
JOIN_IN_SECONDS: Final = 90
#: The bots' join deadline: bots whose join got no usable answer fail by then.
JOIN_DEADLINE_SECONDS: Final = 20
AFTER_JOIN_SECONDS: Final = JOIN_DEADLINE_SECONDS + 15


def now_iso(offset: float) -> str:
    return datetime.fromtimestamp(time.time() + offset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def doc(version: int, state: str, **extra: Any) -> bytes:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return json.dumps({"protocol": "v1", "version": version, "state": state, "since": stamp, **extra}).encode()


def response(body: bytes, *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n".encode()
    return head + extra + b"\r\n" + body


@dataclass
class Bot:
    """One bot's control API, in good or bad faith (`kind`)."""

    kind: str
    version: int = 1
    state: str = "ready"
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *headers = head.decode("latin-1").split("\r\n")
                method, target, _ = line.split(" ", 2)
                length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0)
                if length:
                    await reader.readexactly(length)
                path = target.split("?", 1)[0]
                if path == "/v1/ready":
                    writer.write(response(b'{"ready":true}'))
                elif self.kind == "normal":
                    await self._normal(method, path, target, writer)
                else:
                    await self._hostile(path, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def _normal(self, method: str, path: str, target: str, writer: asyncio.StreamWriter) -> None:
        if path == "/v1/join" and self.state == "ready":
            self.version, self.state = self.version + 1, "joining"
            writer.write(response(doc(self.version, self.state, joinedBy="signal")))
            asyncio.get_running_loop().call_later(0.5, self._move, "joined")
            return
        if path == "/v1/leave":
            self._move("ended")
        if path == "/v1/state":
            after = int(target.partition("after=")[2].split("&")[0] or 0)
            if self.version <= after:
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), timeout=30)
                except TimeoutError:
                    pass
        writer.write(response(doc(self.version, self.state, joinedBy="signal")))

    def _move(self, state: str) -> None:
        self.version, self.state = self.version + 1, state
        self.changed.set()

    async def _hostile(self, path: str, writer: asyncio.StreamWriter) -> None:
        if self.kind == "huge":
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {HUGE}\r\n\r\n".encode())
            for _ in range(HUGE // len(CHUNK)):
                writer.write(CHUNK)
                await writer.drain()
        elif self.kind == "reason":
            message = "giving up\n2026-01-01 00:00:00 INFO scheduledbot forged line\x1b[2J\u202eevil"
            writer.write(response(doc(9, "failed", reason="R" * 2000, message=message)))
        elif self.kind == "headers":
            flood = b"".join(b"X-Flood-%d: %s\r\n" % (i, b"y" * 4000) for i in range(2000))
            writer.write(response(doc(2, "joined"), extra=flood))
        else:  # silent: holds the connection, never answers
            with contextlib.suppress(asyncio.CancelledError):  # the bench ends
                await asyncio.sleep(3600)


KINDS: Final = ("huge", "reason", "headers", "silent")


class Stage:
    """Every bot's control API, on each Pod's address as it appears."""

    def __init__(self) -> None:
        self.bots: dict[str, Bot] = {}
        self.servers: list[asyncio.Server] = []

    async def bind(self, address: str, bot: Bot) -> None:
        if address in self.bots:
            return
        self.bots[address] = bot
        self.servers.append(await asyncio.start_server(bot.serve, address, PORT))

    async def close(self) -> None:
        for server in self.servers:
            server.close()


def template(run: str) -> dict[str, Any]:
    return sleeping_bot(
        run, port=PORT, grace=1, sleep=600, probe={"initialDelaySeconds": 2, "periodSeconds": 5, "timeoutSeconds": 5}
    )


def rss(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM of `pid`, in bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


class SourceOperator(OperatorProcess):
    """The operator from another checkout, which may predate `--token-key-file`."""

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("--token-key-file")
        return command[:at] + command[at + 2 :]


async def one_run(mode: str, count: int, kubeconfig: Path, workdir: Path, source: Path | None = None) -> dict[str, Any]:
    run = f"{mode}-{secrets.token_hex(3)}"
    namespace = f"hostile-bench-{run}"
    kubectl("create", "namespace", namespace, kubeconfig=kubeconfig)
    options: dict[str, Any] = {
        "kubeconfig": kubeconfig,
        "namespaces": [namespace],
        "log_path": workdir / f"operator-{run}.log",
        "webhook": False,
    }
    if source is not None:
        operator: OperatorProcess = SourceOperator(**options, env={"PYTHONPATH": str(source / "operator")})
    else:
        operator = OperatorProcess(**options)
    operator.start()
    stage = Stage()
    try:
        await asyncio.sleep(2)
        before, _ = rss(operator.pid)
        join_at = now_iso(JOIN_IN_SECONDS)
        bots = [
            {
                "apiVersion": "meetingbots.dev/v1alpha1",
                "kind": "ScheduledBot",
                "metadata": {"name": f"b{i:03d}", "namespace": namespace},
                "spec": {
                    "meetingUrl": f"https://zoom.us/j/{9100000000 + i}",
                    "joinAt": join_at,
                    "stagingLeadSeconds": JOIN_IN_SECONDS,
                    "joinDeadlineSeconds": JOIN_DEADLINE_SECONDS,
                    "template": template(run),
                },
            }
            for i in range(count)
        ]
        kinds = {f"b{i:03d}-bot": ("normal" if mode == "normal" else KINDS[i % len(KINDS)]) for i in range(count)}
        # In a thread: on a busy machine creating them takes a while, and the first bots'
        # Pods need their control API meanwhile.
        applying = asyncio.create_task(
            asyncio.to_thread(
                kubectl,
                "apply",
                "-f",
                "-",
                input=json.dumps({"apiVersion": "v1", "kind": "List", "items": bots}),
                kubeconfig=kubeconfig,
                timeout=5 * JOIN_IN_SECONDS,
            )
        )
        peak = before
        deadline = time.monotonic() + JOIN_IN_SECONDS + AFTER_JOIN_SECONDS
        next_bind = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_bind:
                # In a thread: the bots' servers run on this loop and must not wait for kubectl.
                listed_pods = await asyncio.to_thread(
                    kubectl, "get", "pods", "-n", namespace, "-o", "json", kubeconfig=kubeconfig
                )
                pods = json.loads(listed_pods.stdout)
                for pod in pods["items"]:
                    address = (pod.get("status") or {}).get("podIP")
                    if address:
                        await stage.bind(address, Bot(kinds.get(pod["metadata"]["name"], "normal")))
                next_bind = time.monotonic() + 1.0
            peak = max(peak, rss(operator.pid)[0])
            await asyncio.sleep(0.2)
        await applying
        current, high_water = rss(operator.pid)
        listed = json.loads(kubectl("get", "sbot", "-n", namespace, "-o", "json", kubeconfig=kubeconfig).stdout)
        states = Counter(
            f"{(b.get('status') or {}).get('state')}/{(b.get('status') or {}).get('reason')}" for b in listed["items"]
        )
        tracebacks = operator.log().count("Traceback")
        return {
            "mode": mode,
            "operator": str(source) if source is not None else "this checkout",
            "bots": count,
            "rss_before_mb": round(before / 2**20, 1),
            "rss_peak_mb": round(peak / 2**20, 1),
            "rss_high_water_mb": round(high_water / 2**20, 1),
            "rss_end_mb": round(current / 2**20, 1),
            "states": dict(sorted(states.items())),
            "operator_tracebacks": tracebacks,
        }
    finally:
        # While the operator runs: bots in a meeting hold a finalizer until they have left.
        await asyncio.to_thread(
            kubectl, "delete", "namespace", namespace, "--timeout=90s", kubeconfig=kubeconfig, check=False, timeout=120
        )
        operator.close()
        await stage.close()


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--bots", type=int, default=100, help="bots per run (default 100)")
    parser.add_argument("--modes", default="normal,hostile", help="runs, in order (default normal,hostile)")
    parser.add_argument("--operator-source", type=Path, help="run the operator from this checkout instead")
    args = parser.parse_args(argv)
    kubeconfig = DEFAULT_LAYOUT.kubeconfig
    workdir = DEFAULT_LAYOUT.logs / "bench-hostile"
    workdir.mkdir(parents=True, exist_ok=True)
    results = [
        await one_run(mode, args.bots, kubeconfig, workdir, args.operator_source) for mode in args.modes.split(",")
    ]
    print(json.dumps({"machine_cpus": os.cpu_count(), "runs": results}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
