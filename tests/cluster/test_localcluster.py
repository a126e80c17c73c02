"""The cluster tooling itself: `up` reuses and repairs, `down` leaves nothing behind.

Runs a second, private cluster (LOCALCLUSTER_DIR under tmp_path), so the
session's shared cluster is never disturbed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from localcluster import procs
from localcluster.cluster import COMPONENTS, REPO_ROOT, Layout, leftover_processes
from localcluster.testing import Cluster

pytestmark = pytest.mark.cluster


def localcluster(command: str, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tools"), "LOCALCLUSTER_DIR": str(directory)}
    result = subprocess.run(
        [sys.executable, "-m", "localcluster", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"localcluster {command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_up_reuses_a_healthy_cluster_restarts_a_broken_one_and_down_stops_everything(tmp_path: Path) -> None:
    layout = Layout(tmp_path / ".cluster")
    private = Cluster(layout)
    try:
        assert "cluster up in" in localcluster("up", layout.root).stdout
        assert "already running" in localcluster("up", layout.root).stdout

        apiserver = procs.ProcessRef.read(layout.pidfile("kube-apiserver"))
        assert apiserver is not None
        os.kill(apiserver.pid, signal.SIGKILL)
        repaired = localcluster("up", layout.root).stdout
        assert "cleaning up a previous run" in repaired and "cluster up in" in repaired

        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sleeper", "namespace": "default"},
            "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "600"]}]},
        }
        private.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))
        private.wait_for_pod("default", "sleeper", lambda p: p["status"].get("phase") == "Running", what="Running")
        sleeper = procs.ProcessRef.read(private.pod_dir("default", "sleeper") / "pid")
        assert sleeper is not None and sleeper.alive()
    finally:
        localcluster("down", layout.root)

    assert leftover_processes(layout) == []
    assert not sleeper.alive()
    assert not any(layout.pidfile(c).exists() for c in COMPONENTS)
    assert "stopped" in localcluster("down", layout.root).stdout
