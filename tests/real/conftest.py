"""Fixtures of the real-node suite: the running node, the operator deployed as users deploy it,
a meeting server on the node's address, and a namespace per test.

The node must be up with the project's image in it (`make cluster-real && make image`,
which `make test-real` runs first); a fixture fails, with that advice, if it is not.
The operator is deployed once per session with `make deploy` of an overlay that changes
only the image and adds two settings the local setup needs: the default bot image (the
same image) and the meeting server's host (an admin-only flag, off by default).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.bots import Bots as ClusterBots
from localcluster.meeting import MeetingServerProcess
from localcluster.testing import Cluster
from realnode import configs, images, node

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "scheduledbot-system"
OPERATOR_SELECTOR = "app.kubernetes.io/name=scheduledbot-operator"
Obj = dict[str, Any]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The teardown test stops the node: it goes last."""
    items.sort(key=lambda item: item.path.name == "test_teardown.py")


@pytest.fixture(scope="session")
def real() -> Cluster:
    layout = node.DEFAULT_LAYOUT
    if not node.healthy(layout):
        pytest.fail("the real node is not running: `make cluster-real && make image` first", pytrace=False)
    if not images.node_has_image(layout.socket, configs.OPERATOR_IMAGE):
        pytest.fail(f"{configs.OPERATOR_IMAGE} is not in the node: `make image` first", pytrace=False)
    return Cluster(layout.cluster)


@pytest.fixture(scope="session")
def meeting_server() -> Iterator[MeetingServerProcess]:
    """On the node's address: reachable from the Pod network, and from here."""
    with MeetingServerProcess(host=configs.NODE_IP) as server:
        yield server


def render_overlay(directory: Path) -> Path:
    """manifests/ with the local image, as `kustomize edit set image` would make it, and two settings."""
    directory.mkdir(parents=True, exist_ok=True)
    name, tag = configs.OPERATOR_IMAGE.rsplit(":", 1)
    env = [
        {"name": "SCHEDULEDBOT_DEFAULT_IMAGE", "value": configs.OPERATOR_IMAGE},
        {"name": "SCHEDULEDBOT_EXTRA_MEETING_HOSTS", "value": configs.NODE_IP},
    ]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(ROOT / "manifests", directory)],
        "images": [{"name": "ghcr.io/meetingbots/scheduledbot-operator", "newName": name, "newTag": tag}],
        "patches": [
            {
                "target": {"kind": "Deployment", "name": "scheduledbot-operator"},
                "patch": yaml.safe_dump(
                    [{"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": e} for e in env]
                ),
            }
        ],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return directory


@dataclass
class Operator:
    """The operator as the Deployment runs it."""

    cluster: Cluster

    def pods(self) -> list[Obj]:
        out = self.cluster.kubectl(
            "get", "pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR, "-o", "json"
        ).stdout
        return list(json.loads(out)["items"])

    def running_pods(self) -> list[Obj]:
        """The Deployment's replicas (two, a leader and a hot standby), not those being deleted."""
        return [p for p in self.pods() if not p["metadata"].get("deletionTimestamp")]

    def wait_available(self, timeout: int = 120) -> None:
        self.cluster.kubectl(
            "rollout",
            "status",
            "deployment/scheduledbot-operator",
            "-n",
            OPERATOR_NAMESPACE,
            f"--timeout={timeout}s",
            timeout=timeout + 10,
        )

    def wait_webhook_serving(self, meeting_url: str, timeout: float = 60) -> str:
        """Until the API server gets the webhook's answer through its Service; that answer."""
        past = {
            "apiVersion": "meetingbots.dev/v1alpha1",
            "kind": "ScheduledBot",
            "metadata": {"name": "probe", "namespace": OPERATOR_NAMESPACE},
            "spec": {"meetingUrl": meeting_url, "joinAt": "2020-01-01T00:00:00Z"},
        }
        deadline = time.monotonic() + timeout
        while True:
            result = self.cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(past), check=False)
            if "admission webhook" in result.stderr:
                return result.stderr
            if time.monotonic() > deadline:
                raise AssertionError(f"the webhook never answered through its Service: {result.stderr}")
            time.sleep(1)

    def log(self, lines: int = 60) -> str:
        return self.cluster.kubectl(
            "logs", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR, f"--tail={lines}", "--prefix", check=False
        ).stdout


@pytest.fixture(scope="session")
def operator(real: Cluster, meeting_server: MeetingServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Operator:
    """`make deploy` of the manifests (with the local image), as users deploy them."""
    overlay = render_overlay(tmp_path_factory.mktemp("overlay"))
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "deploy", f"MANIFESTS={overlay}"],
        env={**os.environ, "KUBECONFIG": str(real.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"make deploy failed:\n{result.stdout}\n{result.stderr}"
    op = Operator(real)
    op.wait_available()
    op.wait_webhook_serving(meeting_server.meeting_url("probe"))
    return op


@pytest.fixture
def bot_namespace(real: Cluster, operator: Operator, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace; on failure its objects, events, Pod logs and the operator's log are printed."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"r-{slug}-{secrets.token_hex(3)}"
    real.kubectl("create", "namespace", name)
    real.wait_for_service_account(name)
    yield name
    report = getattr(request.node, "report_call", None)  # set by tests/conftest.py
    if report is not None and report.failed:
        print(f"=== namespace {name} after the failure ===")
        print(real.kubectl("get", "all,events,scheduledbots", "-n", name, "-o", "wide", check=False).stdout)
        print(real.kubectl("get", "scheduledbots", "-n", name, "-o", "yaml", check=False).stdout)
        print(
            real.kubectl(
                "logs",
                "-n",
                name,
                "--all-containers",
                "--prefix",
                "-l",
                "meetingbots.dev/scheduledbot",
                "--tail=40",
                check=False,
            ).stdout
        )
        print(f"=== operator log ===\n{operator.log()}")
    real.kubectl("delete", "namespace", name, "--wait=false", check=False)


@dataclass
class Watch:
    """`kubectl get -w` of one object, as a user watches it: each value of `jsonpath` it passes through."""

    cluster: Cluster
    namespace: str
    resource: str
    name: str
    jsonpath: str
    values: list[str] = field(default_factory=list)
    _process: subprocess.Popen[str] | None = None
    _reader: threading.Thread | None = None

    def __enter__(self) -> Watch:
        self._process = subprocess.Popen(
            [
                "kubectl",
                "get",
                self.resource,
                self.name,
                "-n",
                self.namespace,
                "--watch",
                "-o",
                f'jsonpath={self.jsonpath}{{"\\n"}}',
            ],
            env={**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            value = line.strip()
            if value and (not self.values or self.values[-1] != value):
                self.values.append(value)

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None and self._reader is not None
        time.sleep(0.5)  # the last event on its way
        self._process.terminate()
        self._process.wait(timeout=10)
        self._reader.join(timeout=10)


class Bots(ClusterBots):
    """kubectl, as a user drives ScheduledBots, and the meeting server's records (as on the local
    cluster), and what only a real node shows: watches, Pods' readiness, commands run in them."""

    def watch(self, name: str) -> Watch:
        """The states of a ScheduledBot, as `kubectl get sbot -w` shows them."""
        return Watch(self.cluster, self.namespace, "scheduledbot", name, "{.status.state}")

    def watch_pod(self, name: str, jsonpath: str) -> Watch:
        return Watch(self.cluster, self.namespace, "pod", name, jsonpath)

    def pod(self, name: str) -> Obj:
        out = self.cluster.kubectl("get", "pod", name, "-n", self.namespace, "-o", "json").stdout
        found: Obj = json.loads(out)
        return found

    def wait_pod(self, name: str, condition: str, timeout: int = 60) -> None:
        """`kubectl wait --for=<condition>` on one Pod (`condition=Ready`, `delete`)."""
        self.cluster.kubectl(
            "wait",
            f"--for={condition}",
            f"pod/{name}",
            "-n",
            self.namespace,
            f"--timeout={timeout}s",
            timeout=timeout + 30,
        )

    def wait_pod_ready(self, name: str, timeout: int = 60) -> Obj:
        self.wait_pod(name, "condition=Ready", timeout)
        return self.pod(name)

    def exec(self, pod: str, *command: str) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("exec", pod, "-n", self.namespace, "--", *command, check=False)


@pytest.fixture
def bots(real: Cluster, bot_namespace: str, meeting_server: MeetingServerProcess) -> Bots:
    return Bots(real, bot_namespace, meeting_server)
