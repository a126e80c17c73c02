"""ScheduledBots as a user drives them (kubectl), and the local meeting server's view of them.

Shared by the end-to-end tests and the demo: manifests, `kubectl apply`, `kubectl
wait` on a bot's state, the bot's Pods, Secrets and Events, and what the meeting
server saw (arrivals, departures) through its admin API.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from localcluster.cluster import REPO_ROOT
from localcluster.meeting import MeetingServerProcess
from localcluster.testing import Cluster

CRD = "scheduledbots.meetingbots.dev"


def iso(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as a user writes joinAt."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def install_crd(cluster: Cluster) -> str:
    """Apply crds/ as `make install` does and wait until the API serves it; kubectl's output."""
    applied = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{CRD}")
    return applied.stdout.strip()


@dataclass
class Bots:
    """The ScheduledBots of one namespace, through kubectl; meetings on the local meeting server."""

    cluster: Cluster
    namespace: str
    meeting_server: MeetingServerProcess

    def manifest(
        self, name: str, *, join_at: datetime | str, lead: int | None = 6, meeting: str | None = None, **spec: Any
    ) -> dict[str, Any]:
        """A ScheduledBot joining meeting `meeting` (default `<namespace>-<name>`); `spec` adds or overrides fields."""
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
        body: dict[str, Any] = json.loads(out)
        return body

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def wait_for(self, name: str, jsonpath: str, value: str, *, timeout: float = 60) -> dict[str, Any]:
        """`kubectl wait --for=jsonpath=...` on the bot; its status once the field has the value."""
        result = self.cluster.kubectl(
            "wait",
            f"--for=jsonpath={{{jsonpath}}}={value}",
            f"--timeout={int(timeout)}s",
            f"scheduledbot/{name}",
            "-n",
            self.namespace,
            check=False,
            timeout=timeout + 15,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{name}: {jsonpath} not {value} in {timeout:g} s: {self.status(name)}\n{result.stderr}"
            )
        return self.status(name)

    def wait_state(self, name: str, state: str, *, timeout: float = 60) -> dict[str, Any]:
        """`kubectl wait` on the state, as the README tells users to."""
        return self.wait_for(name, ".status.state", state, timeout=timeout)

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
        """The meeting server's record of a meeting (arrivals, departures, ...); HTTPError 404 if unknown."""
        url = f"{self.meeting_server.base_url}/admin/meetings/{meeting_id}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.loads(response.read()))

    def arrivals(self, meeting_id: str) -> list[dict[str, Any]]:
        """Who arrived at a meeting; none while nobody has asked for it."""
        try:
            return list(self.meeting(meeting_id)["arrivals"])
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return []
            raise

    def admin(self, meeting_id: str, action: str = "", body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST to the meeting's admin API: settings (no action), or `end`, `admit`, ..."""
        url = f"{self.meeting_server.base_url}/admin/meetings/{meeting_id}" + (f"/{action}" if action else "")
        request = urllib.request.Request(
            url, data=json.dumps(body or {}).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return dict(json.loads(response.read()))
