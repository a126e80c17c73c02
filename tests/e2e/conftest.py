"""End-to-end fixtures: the CRD, a local meeting server, and the operator as users run it.

The operator runs as its console entry point in a subprocess, against the local
control plane, watching only the test's namespace (its webhook configuration is
named after the namespace and selects only it), so tests stay independent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from localcluster.meeting import MeetingServerProcess

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="session")
def crd(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/scheduledbots.meetingbots.dev")


@pytest.fixture(scope="session")
def meeting_server() -> Iterator[MeetingServerProcess]:
    with MeetingServerProcess() as server:
        yield server


@dataclass
class Operator:
    """The operator in a subprocess: start, stop, kill, and read its log."""

    kubeconfig: Path
    namespace: str
    extra_hosts: str
    log_path: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    health_port: int = 0
    webhook_port: int = 0
    metrics_port: int = 0

    @property
    def webhook_config(self) -> str:
        return f"scheduledbot-test-{self.namespace}"

    def start(self, *, timeout: float = 30.0) -> None:
        self.health_port, self.webhook_port, self.metrics_port = free_port(), free_port(), free_port()
        command = [
            sys.executable,
            "-m",
            "scheduledbot.runtime.main",
            "--namespace",
            self.namespace,
            "--extra-meeting-hosts",
            self.extra_hosts,
            "--health-port",
            str(self.health_port),
            "--metrics-port",
            str(self.metrics_port),
            "--webhook-listen",
            "127.0.0.1",
            "--webhook-port",
            str(self.webhook_port),
            "--webhook-host",
            "127.0.0.1",
            "--webhook-config-name",
            self.webhook_config,
            "--log-level",
            "DEBUG",
            *self.args,
        ]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited with {self.process.returncode}:\n{self.log()}")
            if self._healthy():
                return
            time.sleep(0.1)
        raise TimeoutError(f"operator not healthy after {timeout} s:\n{self.log()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as r:
                healthy = r.status == 200
        except OSError:
            return False
        if not healthy:
            return False
        # The webhook must be registered and listening before a test relies on it.
        try:
            with socket.create_connection(("127.0.0.1", self.webhook_port), timeout=1):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as when a node dies."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:] if self.log_path.exists() else ""


@pytest.fixture
def operator(
    cluster: Any,
    namespace: str,
    crd: None,
    meeting_server: MeetingServerProcess,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Operator]:
    host = meeting_server.base_url.split("://", 1)[1]
    op = Operator(
        kubeconfig=Path(cluster.kubeconfig), namespace=namespace, extra_hosts=host, log_path=tmp_path / "operator.log"
    )
    op.start()
    yield op
    op.stop()
    report = getattr(request.node, "report_call", None)  # set by tests/conftest.py
    if report is not None and report.failed:
        print(f"\n----- operator log ({namespace}) -----\n{op.log()}")
    cluster.kubectl("delete", "validatingwebhookconfiguration", op.webhook_config, "--ignore-not-found", check=False)


@dataclass
class Bots:
    """kubectl, as a user drives ScheduledBots."""

    cluster: Any
    namespace: str
    meeting_server: MeetingServerProcess

    def manifest(
        self, name: str, *, join_at: datetime | str, lead: int | None = 6, meeting: str | None = None, **spec: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "meetingUrl": self.meeting_server.meeting_url(meeting or f"{self.namespace}-{name}"),
            "botName": f"Bot {name}",
            "joinAt": join_at if isinstance(join_at, str) else iso(join_at),
        }
        if lead is not None:
            body["stagingLeadSeconds"] = lead
        body.update(spec)
        return {
            "apiVersion": "meetingbots.dev/v1alpha1",
            "kind": "ScheduledBot",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": body,
        }

    def apply(self, manifest: dict[str, Any], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=check)

    def get(self, name: str) -> dict[str, Any]:
        out = self.cluster.kubectl("get", "scheduledbot", name, "-n", self.namespace, "-o", "json").stdout
        return json.loads(out)

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def wait_state(self, name: str, state: str, *, timeout: float = 60) -> dict[str, Any]:
        """`kubectl wait` on the state, as the README tells users to."""
        result = self.cluster.kubectl(
            "wait",
            f"--for=jsonpath={{.status.state}}={state}",
            f"--timeout={int(timeout)}s",
            f"scheduledbot/{name}",
            "-n",
            self.namespace,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"{name} did not reach {state}: {self.status(name)}\n{result.stderr}")
        return self.status(name)

    def pods(self) -> list[dict[str, Any]]:
        out = self.cluster.kubectl("get", "pods", "-n", self.namespace, "-o", "json").stdout
        return list(json.loads(out)["items"])

    def secrets(self) -> list[str]:
        out = self.cluster.kubectl("get", "secrets", "-n", self.namespace, "-o", "json").stdout
        return [s["metadata"]["name"] for s in json.loads(out)["items"]]

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "get", "events", "-n", self.namespace, "-o", "json", f"--field-selector=involvedObject.name={name}"
        ).stdout
        return list(json.loads(out)["items"])

    def meeting(self, meeting_id: str) -> dict[str, Any]:
        url = f"{self.meeting_server.base_url}/admin/meetings/{meeting_id}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.loads(response.read()))

    def admin(self, meeting_id: str, action: str = "", body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.meeting_server.base_url}/admin/meetings/{meeting_id}" + (f"/{action}" if action else "")
        request = urllib.request.Request(
            url, data=json.dumps(body or {}).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return dict(json.loads(response.read()))


@pytest.fixture
def bots(cluster: Any, namespace: str, meeting_server: MeetingServerProcess) -> Bots:
    return Bots(cluster=cluster, namespace=namespace, meeting_server=meeting_server)


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)
