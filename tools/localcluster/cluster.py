"""Start, check and stop the local control plane.

The cluster is etcd, kube-apiserver, kube-controller-manager (built from the
pinned Go modules by tools/cluster/build.sh) and the fake kubelet of
`localcluster.kubelet`, each a background process leading its own process
group, with its log and pid file under `.cluster/` at the repository root.

Why every `up` of a stopped or broken cluster starts from nothing (new PKI,
empty etcd): a test cluster is only useful when its state is known. Repairing
a half-dead cluster (an etcd that lost its apiserver, Pods whose kubelet died
with the shell) costs more code than the ten seconds a fresh start takes.
`down` keeps the files, so the logs of a failed run can still be read.

Ports are picked free by the OS at each start, so two checkouts (or another
program on 6443) never collide; the kubeconfig is rewritten to match.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from localcluster import pki as pki_mod
from localcluster import procs
from localcluster.net import free_ports
from localcluster.waiting import until

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BUILD_SCRIPT: Final = REPO_ROOT / "tools" / "cluster" / "build.sh"
NODE_NAME: Final = "local-node"
COMPONENTS: Final = ("etcd", "kube-apiserver", "kube-controller-manager", "kubelet")
CONTROLLERS: Final = (
    "garbage-collector-controller",
    "namespace-controller",
    # Creates the `default` ServiceAccount that Pod admission requires.
    "serviceaccount-controller",
    # Publishes kube-root-ca.crt into every namespace, as clients expect.
    "root-ca-certificate-publisher-controller",
    # So that manifests with a Deployment (the operator's own) can be applied.
    "deployment-controller",
    "replicaset-controller",
)
START_TIMEOUT: Final = 120.0


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class Layout:
    """Where everything lives under the cluster directory."""

    root: Path

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def pki(self) -> pki_mod.Pki:
        return pki_mod.Pki(self.root / "pki")

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def pods(self) -> Path:
        return self.root / "pods"

    @property
    def admission_config(self) -> Path:
        return self.root / "admission.yaml"

    @property
    def webhook_kubeconfig(self) -> Path:
        return self.root / "webhook-client.kubeconfig"

    def pidfile(self, component: str) -> Path:
        return self.run / f"{component}.pid"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


# LOCALCLUSTER_DIR gives a second cluster its own directory (processes, ports
# and Pod addresses never overlap), for example to try the tooling itself
# while the suite of the same checkout uses the default one.
DEFAULT_LAYOUT: Final = Layout(Path(os.environ.get("LOCALCLUSTER_DIR", REPO_ROOT / ".cluster")).resolve())


def say(message: str) -> None:
    print(f"localcluster: {message}", flush=True)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """One `up`/`down` at a time: `make cluster` and a test session may race."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with procs.exclusive(layout.lock, on_wait=lambda: say("waiting for another localcluster command to finish")):
        yield


# --- talking to the running cluster -------------------------------------------------


def _state(layout: Layout) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(layout.state.read_text())
        return state
    except (OSError, ValueError):
        return None


def _ssl_context(layout: Layout) -> ssl.SSLContext:
    p = layout.pki
    context = ssl.create_default_context(cafile=str(p.ca_cert))
    context.load_cert_chain(str(p.admin_cert), str(p.admin_key))
    return context


def http_get(url: str, *, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (OSError, ssl.SSLError):
        return 0, b""


def api_get(layout: Layout, path: str) -> tuple[int, bytes]:
    state = _state(layout)
    if state is None:
        return 0, b""
    return http_get(f"{state['server']}{path}", context=_ssl_context(layout))


def apiserver_ready(layout: Layout) -> bool:
    return api_get(layout, "/readyz")[0] == 200


def node_ready(layout: Layout, node: str = NODE_NAME) -> bool:
    status, body = api_get(layout, f"/api/v1/nodes/{node}")
    if status != 200:
        return False
    conditions = json.loads(body).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def default_service_account_exists(layout: Layout) -> bool:
    return api_get(layout, "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200


def _component_refs(layout: Layout) -> dict[str, procs.ProcessRef | None]:
    return {c: procs.ProcessRef.read(layout.pidfile(c)) for c in COMPONENTS}


def _all_alive(layout: Layout) -> bool:
    return all(ref is not None and ref.alive() for ref in _component_refs(layout).values())


def healthy(layout: Layout = DEFAULT_LAYOUT) -> bool:
    return (
        _all_alive(layout) and apiserver_ready(layout) and node_ready(layout) and default_service_account_exists(layout)
    )


# --- up --------------------------------------------------------------------------------


def build(*args: str) -> Path:
    """Build (or find cached) binaries; the script's progress goes to our stderr."""
    result = subprocess.run([str(BUILD_SCRIPT), *args], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    return Path(result.stdout.strip().splitlines()[-1])


def wipe(layout: Layout) -> None:
    for entry in layout.root.iterdir():
        if entry == layout.lock:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def write_kubeconfig(
    layout: Layout,
    server: str,
    *,
    user: tuple[Path, Path] | None = None,
    path: Path | None = None,
) -> None:
    """The admin's kubeconfig, or (`user`: certificate and key) another identity's at `path`."""
    p = layout.pki
    cert, key = user or (p.admin_cert, p.admin_key)
    target = path or layout.kubeconfig

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    # Embedded data, not paths: the file stays valid when copied elsewhere.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "localcluster",
                "cluster": {"server": server, "certificate-authority-data": b64(p.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": b64(cert),
                    "client-key-data": b64(key),
                },
            }
        ],
        "contexts": [
            {
                "name": "localcluster",
                "context": {"cluster": "localcluster", "user": "admin", "namespace": "default"},
            }
        ],
        "current-context": "localcluster",
    }
    tmp = target.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(target)


def _write_admission_config(layout: Layout) -> None:
    """The apiserver presents its webhook client certificate to every admission webhook.

    As a production control plane can (--admission-control-config-file): webhooks
    that require a client certificate then know their caller is the apiserver.
    """
    p = layout.pki
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        # "*" matches every webhook host.
        "users": [
            {
                "name": "*",
                "user": {
                    "client-certificate": str(p.apiserver_webhook_client_cert),
                    "client-key": str(p.apiserver_webhook_client_key),
                },
            }
        ],
    }
    layout.webhook_kubeconfig.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
    plugin = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "WebhookAdmissionConfiguration",
        "kubeConfigFile": str(layout.webhook_kubeconfig),
    }
    config = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {"name": name, "configuration": plugin}
            for name in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
        ],
    }
    layout.admission_config.write_text(yaml.safe_dump(config, sort_keys=False))


def spawn(
    layout: Layout, component: str, argv: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    # Never our stdout: a caller capturing `up`'s output (pytest) would wait
    # for EOF until the cluster stops.
    with open(layout.log(component), "ab") as log:
        process = procs.start_leader(argv, output=log, cwd=layout.root, env=env)
    ref = procs.ProcessRef.of(process.pid)
    if ref is None:
        raise ClusterError(f"{component} exited at once; see {layout.log(component)}")
    ref.write(layout.pidfile(component))
    return process


def _log_tail(layout: Layout, component: str, lines: int = 25) -> str:
    try:
        text = layout.log(component).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_for(
    layout: Layout,
    what: str,
    check: Callable[[], bool],
    watched: dict[str, subprocess.Popen[bytes]],
    started: float,
) -> None:

    def ready() -> bool:
        if check():
            return True
        for component, process in watched.items():
            if process.poll() is not None:
                raise ClusterError(
                    f"{component} exited with code {process.returncode} while waiting for {what}; "
                    f"last lines of {layout.log(component)}:\n{_log_tail(layout, component)}"
                )
        return False

    try:
        until(ready, timeout=START_TIMEOUT, what=what)
    except TimeoutError as error:
        raise ClusterError(str(error)) from None
    say(f"{what} ({time.monotonic() - started:.1f} s)")


@dataclass(frozen=True)
class ControlPlane:
    """What a real node's control plane changes from the fake-kubelet cluster's.

    `address` is where kube-apiserver listens and what it advertises (a real
    node's Pods cannot reach the host's loopback); `apiserver_flags` replace or
    add kube-apiserver flags by name (flags holding lists would append if given
    twice, so they are merged here, not on the command line).
    """

    address: str = "127.0.0.1"
    node_name: str = NODE_NAME
    apiserver_flags: tuple[tuple[str, str], ...] = ()
    controllers: tuple[str, ...] = CONTROLLERS


def start_control_plane(
    layout: Layout, bin_dir: Path, started: float, plane: ControlPlane = ControlPlane()
) -> dict[str, subprocess.Popen[bytes]]:
    """PKI, kubeconfig, etcd, kube-apiserver and kube-controller-manager; the processes started."""
    for d in (layout.logs, layout.run, layout.pods):
        d.mkdir(parents=True, exist_ok=True)
    extra_ips = () if plane.address == "127.0.0.1" else (plane.address,)
    p = pki_mod.generate(layout.pki.dir, node_name=plane.node_name, extra_ips=extra_ips)
    etcd_port, etcd_peer_port, api_port = free_ports(3)
    server = f"https://{plane.address}:{api_port}"
    layout.state.write_text(json.dumps({"server": server, "etcd_port": etcd_port, "bin": str(bin_dir)}))
    write_kubeconfig(layout, server)
    _write_admission_config(layout)

    watched: dict[str, subprocess.Popen[bytes]] = {}
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{etcd_peer_port}"
    watched["etcd"] = spawn(
        layout,
        "etcd",
        [
            str(bin_dir / "etcd"),
            "--name=local",
            f"--data-dir={layout.etcd_data}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=local={peer_url}",
            # Test data: durability is worthless, and fsync dominates write
            # latency on small disks.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
    )
    wait_for(
        layout,
        f"etcd healthy on {etcd_url}",
        lambda: b'"health":"true"' in http_get(f"{etcd_url}/health")[1],
        watched,
        started,
    )

    apiserver_flags = {
        "--etcd-servers": etcd_url,
        "--bind-address": plane.address,
        "--advertise-address": plane.address,
        "--secure-port": str(api_port),
        "--tls-cert-file": str(p.apiserver_cert),
        "--tls-private-key-file": str(p.apiserver_key),
        "--client-ca-file": str(p.ca_cert),
        "--authorization-mode": "RBAC",
        "--service-account-issuer": "https://kubernetes.default.svc.cluster.local",
        "--service-account-key-file": str(p.service_account_pub),
        "--service-account-signing-key-file": str(p.service_account_key),
        "--service-cluster-ip-range": pki_mod.SERVICE_CLUSTER_IP_RANGE,
        # `kubectl logs` is proxied to the kubelet's HTTPS endpoint.
        "--kubelet-certificate-authority": str(p.ca_cert),
        "--kubelet-client-certificate": str(p.apiserver_kubelet_client_cert),
        "--kubelet-client-key": str(p.apiserver_kubelet_client_key),
        "--kubelet-preferred-address-types": "InternalIP",
        # It taints new Nodes not-ready, and only the node lifecycle
        # controller (not run here) would take the taint away.
        "--disable-admission-plugins": "TaintNodesByCondition",
        # The apiserver presents its webhook client certificate to admission webhooks.
        "--admission-control-config-file": str(layout.admission_config),
        # The default reconciler publishes the advertise address as the
        # `kubernetes` Service's endpoint, and loopback addresses are
        # invalid there: it would log an error every 10 s.
        "--endpoint-reconciler-type": "none",
        "--profiling": "false",
        **dict(plane.apiserver_flags),
    }
    watched["kube-apiserver"] = spawn(
        layout,
        "kube-apiserver",
        [str(bin_dir / "kube-apiserver"), *(f"{flag}={value}" for flag, value in apiserver_flags.items())],
    )
    wait_for(layout, f"kube-apiserver ready on {server}", lambda: apiserver_ready(layout), watched, started)

    watched["kube-controller-manager"] = spawn(
        layout,
        "kube-controller-manager",
        [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={layout.kubeconfig}",
            f"--controllers={','.join(plane.controllers)}",
            f"--root-ca-file={p.ca_cert}",
            "--secure-port=0",
            "--leader-elect=false",
        ],
    )
    return watched


def _start(layout: Layout, bin_dir: Path, started: float) -> None:
    watched = start_control_plane(layout, bin_dir, started)
    p = layout.pki
    env = dict(os.environ)
    # The kubelet passes its PATH to Pod processes: with the interpreter's own
    # bin directory first, `python` and the venv's console scripts resolve.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = str(REPO_ROOT / "tools")
    watched["kubelet"] = spawn(
        layout,
        "kubelet",
        [
            sys.executable,
            "-m",
            "localcluster.kubelet",
            f"--kubeconfig={layout.kubeconfig}",
            f"--pods-dir={layout.pods}",
            f"--node-name={NODE_NAME}",
            f"--tls-cert-file={p.kubelet_cert}",
            f"--tls-private-key-file={p.kubelet_key}",
            f"--client-ca-file={p.ca_cert}",
        ],
        env,
    )
    wait_for(layout, f"node {NODE_NAME} ready", lambda: node_ready(layout), watched, started)
    wait_for(
        layout,
        "default ServiceAccount created",
        lambda: default_service_account_exists(layout),
        watched,
        started,
    )
    say(f"cluster up in {time.monotonic() - started:.1f} s; KUBECONFIG={layout.kubeconfig}")


def up(layout: Layout = DEFAULT_LAYOUT) -> None:
    started = time.monotonic()
    with locked(layout):
        if healthy(layout):
            say(f"already running; KUBECONFIG={layout.kubeconfig}")
            return
        bin_dir = build()
        say(f"Kubernetes binaries in {bin_dir} ({time.monotonic() - started:.1f} s)")
        if any(ref is not None and ref.alive() for ref in _component_refs(layout).values()):
            say("cleaning up a previous run")
        _stop(layout)
        wipe(layout)
        try:
            _start(layout, bin_dir, started)
        except BaseException:
            # A half-started cluster is worse than none; the logs stay.
            _stop(layout)
            raise


# --- down --------------------------------------------------------------------------------


def _pod_refs(layout: Layout) -> list[procs.ProcessRef]:
    if not layout.pods.is_dir():
        return []
    refs = (procs.ProcessRef.read(d / "pid") for d in layout.pods.iterdir())
    return [r for r in refs if r is not None]


def _stop(layout: Layout) -> None:
    refs = _component_refs(layout)
    # In stages, each with its grace period in seconds: the kubelet first, so
    # that it does not report Pods failing as they stop; etcd last, as an
    # apiserver without its etcd stalls its shutdown. The apiserver drains
    # open watches (of an operator, of `kubectl get -w`) for a long time: a
    # test cluster has no clients worth that wait.
    stages = (
        (5, [refs["kubelet"]]),
        (10, [refs["kube-controller-manager"], *_pod_refs(layout)]),
        (2, [refs["kube-apiserver"]]),
        (5, [refs["etcd"]]),
    )
    for grace, stage in stages:
        procs.stop_groups([r for r in stage if r is not None], grace=grace)
    # Backstop for processes whose pid files were lost (a deleted .cluster/).
    stray_refs = [r for r in map(procs.ProcessRef.of, leftover_processes(layout)) if r is not None]
    if stray_refs:
        say(f"stopping {len(stray_refs)} process(es) without a pid file")
        procs.stop_groups(stray_refs, grace=5)
    procs.wait_reaped([r for _, stage in stages for r in stage if r is not None] + stray_refs, timeout=3)
    for component in COMPONENTS:
        layout.pidfile(component).unlink(missing_ok=True)


def leftover_processes(layout: Layout) -> list[int]:
    """Pids of this cluster's processes, found without pid files."""
    programs = ("etcd", "kube-apiserver", "kube-controller-manager", "localcluster.kubelet")
    return procs.component_processes(programs, str(layout.root)) + procs.marked_processes(
        f"{procs.POD_MARKER_VAR}={layout.pods}/"
    )


def down(layout: Layout = DEFAULT_LAYOUT) -> None:
    started = time.monotonic()
    with locked(layout):
        _stop(layout)
    say(f"stopped in {time.monotonic() - started:.1f} s")


# --- status --------------------------------------------------------------------------------


def status(layout: Layout = DEFAULT_LAYOUT) -> bool:
    """Print what runs; true when the cluster is fully usable."""
    for component, ref in _component_refs(layout).items():
        running = f"running (pid {ref.pid})" if ref is not None and ref.alive() else "not running"
        say(f"{component:24} {running}")
    state = _state(layout)
    if state is None:
        say("no cluster state (never started, or wiped)")
        return False
    checks = {
        f"apiserver /readyz ({state['server']})": apiserver_ready(layout),
        f"node {NODE_NAME} Ready": node_ready(layout),
        "default ServiceAccount": default_service_account_exists(layout),
    }
    for what, ok in checks.items():
        say(f"{what:24} {'ok' if ok else 'NOT ok'}")
    ok = _all_alive(layout) and all(checks.values())
    say(f"KUBECONFIG={layout.kubeconfig}" if ok else "not healthy; `up` starts it afresh")
    return ok
