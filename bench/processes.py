"""The processes the harness runs: kubectl (the CRDs), the operator (as users run it), the stub, the naive baseline."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from localcluster.operator import Metrics, OperatorProcess

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def apply_crds(kubeconfig: Path) -> bool:
    """The repository's CRDs applied (kubectl) to the cluster at `kubeconfig`; False, said on stderr, with none."""
    if not kubeconfig.exists():
        print(f"bench: no kubeconfig at {kubeconfig}; run `make cluster` first", file=sys.stderr)
        return False
    subprocess.run(
        ["kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        check=True,
        capture_output=True,
        timeout=60,
    )
    return True


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cluster_pids(cluster_dir: Path) -> dict[str, int]:
    """The local control plane's processes (by their arguments naming the cluster directory)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not any(str(cluster_dir).encode() in arg for arg in argv):
            continue
        program = argv[0].rsplit(b"/", 1)[-1].decode(errors="replace")
        if program in ("etcd", "kube-apiserver", "kube-controller-manager"):
            found[program] = int(entry.name)
        elif b"localcluster.kubelet" in argv:
            found["kubelet"] = int(entry.name)
    return found


class CpuMeter:
    """CPU seconds of several processes between two readings."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            try:
                out[name] = cpu_seconds(pid)
            except OSError:
                pass
        return out

    def used(self) -> dict[str, float]:
        now = self._read()
        return {name: now[name] - self.start[name] for name in now if name in self.start}


class BenchOperator(OperatorProcess):
    """The operator as the benchmark runs it: profiled under BENCH_PROFILE, awaited from the event loop."""

    def python_options(self) -> list[str]:
        if not os.environ.get("BENCH_PROFILE"):
            return []
        # cProfile of the whole operator, written when it stops (SIGTERM), not on SIGKILL.
        profile = self.log_path.with_suffix(f".{int(time.time())}.prof")
        return ["-m", "cProfile", "-o", str(profile)]

    async def wait_healthy(self, *, timeout: float = 60) -> float:
        """Seconds from start until it is ready (/healthz answers, the webhook listens)."""
        return await asyncio.to_thread(self.wait_ready, timeout=timeout)

    async def scrape(self) -> Metrics:
        """The operator's metrics; none while it does not answer (busy restarting, say)."""
        try:
            return await asyncio.to_thread(self.metrics, timeout=2)
        except OSError:
            return Metrics({})

    async def close_async(self) -> None:
        await asyncio.to_thread(self.close)


class StubProcess:
    """`python -m bench.stub`, driven by JSON lines on its stdin."""

    def __init__(self, *, port: int, count: int, log_path: Path) -> None:
        self.port = port
        self.count = count
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def start(self, *, timeout: float = 60) -> dict[str, Any]:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.stub",
                "--port",
                str(self.port),
                "--count",
                str(self.count),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
                limit=64 << 20,
                start_new_session=True,
            )
        return await self._read(timeout)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the stub exited; see {self.log_path}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"stub: {reply['error']}")
        return reply

    async def command(self, cmd: str, *, timeout: float = 60, **args: Any) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        async with self._lock:
            self.process.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            await self.process.stdin.drain()
            return await self._read(timeout)

    async def stop(self) -> None:
        if self.process is None:
            return
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self.process = None


async def run_naive(addresses: list[str], *, join_at: float, workdir: Path, timeout: float) -> dict[str, Any]:
    """The naive fan-out in its own process; returns its report (wake-up and answer times)."""
    path = workdir / "naive-addresses.json"
    path.write_text(json.dumps(addresses))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.naive",
        "--join-at",
        repr(join_at),
        "--addresses",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        limit=64 << 20,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), timeout))
        report: dict[str, Any] = json.loads(await asyncio.wait_for(process.stdout.readline(), timeout))
        report["ready"] = ready
        await asyncio.wait_for(process.wait(), 10)
        return report
    except (TimeoutError, ValueError) as error:
        process.kill()
        await process.wait()
        stderr = await process.stderr.read() if process.stderr else b""
        raise RuntimeError(f"naive baseline failed: {error!r}\n{stderr.decode()[-2000:]}") from error
