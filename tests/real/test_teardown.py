"""`make cluster-real-down` leaves the host as `make cluster-real` found it: no process, mount,
link, address, route, iptables chain or rule, sysctl, cgroup or path of the node's is left.

Runs last in the session (tests/real/conftest.py orders it): it stops the node.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from localcluster.testing import Cluster
from realnode import configs, host, node

from .conftest import ROOT

pytestmark = pytest.mark.real_node


def test_down_leaves_the_host_as_found(real: Cluster) -> None:
    layout = node.DEFAULT_LAYOUT
    markers = (str(layout.root),)
    found = json.loads(layout.as_found.read_text())  # recorded by `up` before it changed anything

    # The node has changed the host, and the comparison sees it: it can fail.
    running = host.differences(found, host.capture(markers))
    assert f"links: new {configs.BRIDGE}" in running, running
    assert any(d.startswith("links: new veth") for d in running), "at least one Pod is running"
    assert any("KUBE-FIREWALL" in d for d in running), running
    assert any(d.startswith("processes: new") for d in running), running
    assert any(d.startswith("cgroups: new") for d in running), running

    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "cluster-real-down"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    print(f"\n{result.stdout}")
    assert host.differences(found, host.capture(markers)) == []
