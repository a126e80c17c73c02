"""Fixtures shared by the whole suite: the local cluster and a namespace per test.

Tests that need the cluster ask for the `cluster` (or `namespace`) fixture;
they are marked `cluster` (automatically too, so `-m "not cluster"` never
starts one). Nothing here runs for a session without such tests: tests/unit
works with no binaries and no cluster.

The cluster is started once per session with `python -m localcluster up`,
which reuses a running one. A cluster that was running before the session is
left running (`make cluster-down` / CI own it); one the session started is
stopped at its end.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from localcluster.cluster import BUILD_SCRIPT, healthy
from localcluster.testing import Cluster

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_FIXTURES = ("cluster", "namespace")
REAL_NODE_TESTS = REPO_ROOT / "tests" / "real"


def _localcluster(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tools")}
    return subprocess.run(
        [sys.executable, "-m", "localcluster", command],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _needs_cluster(item: pytest.Item) -> bool:
    return item.get_closest_marker("cluster") is not None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--real-node",
        action="store_true",
        help="run the tests marked real_node (tests/real: `make cluster-real` and `make image` first)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: before `-m` deselects by marker.
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in CLUSTER_FIXTURES):
            item.add_marker(pytest.mark.cluster)
    # The real node needs root, a running node and minutes: only when asked (`make test-real`).
    for item in items:
        if REAL_NODE_TESTS in item.path.parents:
            item.add_marker(pytest.mark.real_node)
    if not config.getoption("--real-node"):
        real = [item for item in items if item.get_closest_marker("real_node") is not None]
        if real:
            config.hook.pytest_deselected(items=real)
            items[:] = [item for item in items if item.get_closest_marker("real_node") is None]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the control plane before any test runs, if a selected test needs it.

    A cold build takes minutes: inside a fixture it would count against the
    first test's timeout. Progress is shown, not captured.
    """
    if session.config.option.collectonly or not any(map(_needs_cluster, session.items)):
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        result = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise pytest.UsageError(f"{BUILD_SCRIPT} failed; the cluster tests cannot run")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    was_running = healthy()
    result = _localcluster("up", timeout=300)
    if result.returncode != 0:
        pytest.fail(f"`python -m localcluster up` failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
    cluster = Cluster()
    # Operators the tests start (subprocesses) authenticate the apiserver as their webhook caller.
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cluster.operator_environment().items():
            patch.setenv(name, value)
        yield cluster
    if not was_running:
        _localcluster("down", timeout=120)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Lets the `namespace` fixture know, at teardown, whether the test failed.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace; on failure its objects and Pod logs are printed."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"t-{slug}-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    # Pod admission needs the namespace's `default` ServiceAccount, which the
    # controller-manager creates a moment after the namespace.
    cluster.wait_for_service_account(name)
    yield name
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(f"=== namespace {name} after the failure ===\n{cluster.diagnostics(name)}")
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
