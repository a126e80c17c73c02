"""End-to-end fixtures: the CRD, a local meeting server, the operator as users run it, and bots.

The operator runs in a subprocess (`localcluster.operator.OperatorProcess`) against the
local control plane, watching only the test's namespace (its webhook configuration is
named after the namespace and selects only it), so tests stay independent. Helpers
live in `localcluster.bots` and `localcluster.operator`; this file holds fixtures only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.bots import Bots, install_crd
from localcluster.meeting import MeetingServerProcess
from localcluster.operator import OperatorProcess
from localcluster.testing import Cluster


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> None:
    install_crd(cluster)


@pytest.fixture(scope="session")
def meeting_server() -> Iterator[MeetingServerProcess]:
    with MeetingServerProcess() as server:
        yield server


@pytest.fixture
def make_operator(
    cluster: Cluster,
    namespace: str,
    crd: None,
    meeting_server: MeetingServerProcess,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., OperatorProcess]]:
    """Makes operators of the test's namespace (started unless `start=False`); all closed at the end.

    Keyword arguments override OperatorProcess's fields (`kubeconfig`, `args`, `webhook_config`, ...).
    """
    made: list[OperatorProcess] = []
    closing = contextlib.ExitStack()

    def make(*, start: bool = True, **options: Any) -> OperatorProcess:
        settings: dict[str, Any] = {
            "kubeconfig": cluster.kubeconfig,
            "namespaces": [namespace],
            "extra_meeting_hosts": [meeting_server.address],
            "log_level": "DEBUG",
            "log_path": tmp_path / f"operator-{len(made)}.log",
            "admin_kubeconfig": cluster.kubeconfig,
            **options,
        }
        operator = OperatorProcess(**settings)
        made.append(operator)
        closing.callback(operator.close)
        if start:
            operator.start()
        return operator

    with closing:
        yield make
    report = getattr(request.node, "report_call", None)  # set by tests/conftest.py
    if report is not None and report.failed:
        for operator in made:
            print(f"\n----- operator log {operator.log_path.name} ({namespace}) -----\n{operator.log()}")


@pytest.fixture
def operator(make_operator: Callable[..., OperatorProcess]) -> OperatorProcess:
    return make_operator()


@pytest.fixture
def bots(cluster: Cluster, namespace: str, meeting_server: MeetingServerProcess) -> Bots:
    return Bots(cluster=cluster, namespace=namespace, meeting_server=meeting_server)
