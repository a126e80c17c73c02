"""Start, check and stop the local control plane with one real node.

The control plane is the fake-kubelet cluster's (localcluster.cluster), listening
on the node's address instead of loopback, plus kube-scheduler. The node is
containerd (runc, the CNI bridge plugin) and the real kubelet, built from the same
pinned Go modules as kube-apiserver.

Containment, so that `down` can leave the host as it found it:
- containerd, its shims and the kubelet share one private mount namespace: every
  mount they make (overlay snapshots, Pod volumes, network namespace handles) is
  invisible to the host and vanishes with the last of them. In it, directories of
  the node's own are bound over /run/containerd, /var/lib/cni, /var/lib/kubelet and
  /var/log/containers,
  which containerd 1.6 and the kubelet use whatever their configuration says.
- Every process of the node and of its Pods is in the cgroup tree
  `scheduledbot-realnode`: `down` freezes it, kills what is in it and removes it.
- The Pods' bridge, its address and the iptables chains have project names
  (realnode.configs); the kubelet's own chains and tunables are removed and
  restored by comparison with the host as recorded before `up` (realnode.host).

Only one real node runs on a machine at a time (the bridge, subnet and cgroup are
fixed names): `up` refuses while another checkout's node runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from localcluster import cluster, procs
from localcluster.net import free_ports
from realnode import configs, host, images

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
CONTROL_PLANE: Final = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
NODE: Final = ("containerd", "kubelet")
COMPONENTS: Final = (*CONTROL_PLANE, *NODE)
#: Besides the fake-kubelet cluster's: EndpointSlices, which the API server follows to
#: reach the webhook's Pod (--enable-aggregator-routing).
CONTROLLERS: Final = (*cluster.CONTROLLERS, "endpointslice-controller")
REQUIRED_COMMANDS: Final = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "nft", "ip")
REQUIRED_COMMANDS_UTIL: Final = ("unshare", "nsenter", "mount")
CNI_PLUGINS: Final = Path("/usr/lib/cni")

# Joins the node's cgroup in every hierarchy, then runs the rest of the command line.
_IN_CGROUP: Final = (
    'cg=$1; shift; for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do [ ! -f "$h$cg/cgroup.procs" ] '
    '|| echo $$ > "$h$cg/cgroup.procs"; done; exec "$@"'
)
# In a fresh private mount namespace: bind SOURCE TARGET pairs up to `--`, then run the rest.
_WITH_BINDS: Final = 'while [ "$1" != -- ]; do mount --bind "$1" "$2"; shift 2; done; shift; exec "$@"'


class NodeError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"realnode: {message}", flush=True)


@dataclass(frozen=True)
class NodeLayout:
    """The node's files, beside the control plane's, under one directory."""

    root: Path

    @property
    def cluster(self) -> cluster.Layout:
        return cluster.Layout(self.root)

    @property
    def node(self) -> Path:
        return self.root / "node"

    @property
    def socket(self) -> Path:
        return self.root / "run" / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.node / "containerd.toml"

    @property
    def kubelet_config(self) -> Path:
        return self.node / "kubelet.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.node / "kubelet.kubeconfig"

    @property
    def kubelet_root(self) -> Path:
        return self.node / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.node / "pod-logs"

    @property
    def cni_conf_dir(self) -> Path:
        return self.node / "cni" / "net.d"

    def bind_source(self, host_path: str) -> Path:
        return self.node / "host" / host_path.strip("/").replace("/", "-")

    @property
    def as_found(self) -> Path:
        """The host before `up` changed anything (realnode.host.capture)."""
        return self.root / "host-as-found.json"

    @property
    def imported(self) -> Path:
        return self.node / "imported.json"


DEFAULT_LAYOUT: Final = NodeLayout(Path(os.environ.get("REALNODE_DIR", REPO_ROOT / ".cluster-real")).resolve())


# --- one node per machine ---------------------------------------------------------------------


@contextlib.contextmanager
def _machine_lock() -> Iterator[Path]:
    """One real node command at a time on this machine; yields the owner file."""
    directory = images.cache_dir()
    with open(directory / "realnode.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("waiting for another real node command on this machine to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield directory / "realnode.owner"


def _claim(owner: Path, layout: NodeLayout) -> None:
    try:
        other = Path(owner.read_text().strip())
    except OSError:
        other = layout.root
    if other != layout.root and (host.link_exists(configs.BRIDGE) or host.cgroup_pids()):
        raise NodeError(
            f"the real node of {other} is running on this machine (one at a time): `make cluster-real-down` there first"
        )
    owner.write_text(f"{layout.root}\n")


# --- checks ---------------------------------------------------------------------------------------


def missing_requirements() -> list[str]:
    missing = [c for c in (*REQUIRED_COMMANDS, *REQUIRED_COMMANDS_UTIL) if shutil.which(c) is None]
    missing += [f"{CNI_PLUGINS}/{p}" for p in ("bridge", "host-local", "loopback") if not (CNI_PLUGINS / p).exists()]
    if os.geteuid() != 0:
        missing.append("root (a real node needs mounts, cgroups, a bridge and iptables)")
    return missing


def _refs(layout: NodeLayout) -> dict[str, procs.ProcessRef | None]:
    return {c: procs.ProcessRef.read(layout.cluster.pidfile(c)) for c in COMPONENTS}


def healthy(layout: NodeLayout = DEFAULT_LAYOUT) -> bool:
    c = layout.cluster
    return (
        all(ref is not None and ref.alive() for ref in _refs(layout).values())
        and host.link_exists(configs.BRIDGE)
        and cluster.apiserver_ready(c)
        and cluster.node_ready(c, configs.NODE_NAME)
        and cluster.default_service_account_exists(c)
    )


def api_port(layout: NodeLayout) -> int:
    state = json.loads(layout.cluster.state.read_text())
    return int(state["server"].rsplit(":", 1)[1])


# --- up ---------------------------------------------------------------------------------------------


def up(layout: NodeLayout = DEFAULT_LAYOUT) -> None:
    started = time.monotonic()
    missing = missing_requirements()
    if missing:
        raise NodeError(f"missing: {', '.join(missing)} (`make real-deps` installs the Debian packages)")
    with _machine_lock() as owner, cluster.locked(layout.cluster):
        _claim(owner, layout)
        if healthy(layout):
            say(f"already running; KUBECONFIG={layout.cluster.kubeconfig}")
            return
        bin_dir = cluster.build("--real-node")
        say(f"Kubernetes binaries in {bin_dir} ({time.monotonic() - started:.1f} s)")
        if _leftovers(layout):
            say("cleaning up a previous run")
        _teardown(layout)
        _refuse_mounts_under(layout.root)
        cluster.wipe(layout.cluster)
        found = host.capture(_markers(layout))
        layout.as_found.write_text(json.dumps(found, indent=1, sort_keys=True))
        say(f"host state recorded ({time.monotonic() - started:.1f} s)")
        try:
            _start(layout, bin_dir, started)
        except BaseException:
            say(f"start failed; undoing what was done (the logs stay in {layout.cluster.logs})")
            _teardown(layout)
            raise


def _markers(layout: NodeLayout) -> tuple[str, ...]:
    return (str(layout.root),)


def _leftovers(layout: NodeLayout) -> bool:
    return (
        any(ref is not None and ref.alive() for ref in _refs(layout).values())
        or host.link_exists(configs.BRIDGE)
        or bool(host.cgroup_pids())
    )


def _refuse_mounts_under(root: Path) -> None:
    mounted = [m for m in host.capture_mounts() if m.startswith(f"{root}/")]
    if mounted:
        raise NodeError(f"mounts under {root} remain; not wiping it: {mounted[:5]}")


def _start(layout: NodeLayout, bin_dir: Path, started: float) -> None:
    host.create_bridge()
    host.create_cgroup(configs.NODE_CGROUP)
    say(f"bridge {configs.BRIDGE} with the node's address {configs.NODE_IP}; cgroup {configs.CGROUP}")
    plane = cluster.ControlPlane(
        address=configs.NODE_IP,
        node_name=configs.NODE_NAME,
        apiserver_flags=(
            # The kubelet is a node, with a node's rights only.
            ("--authorization-mode", "Node,RBAC"),
            ("--enable-admission-plugins", "NodeRestriction"),
            # Webhooks and aggregated APIs are dialled at their Service's endpoints (Pod
            # IPs, on the node's bridge), not at ClusterIPs: there is no kube-proxy.
            ("--enable-aggregator-routing", "true"),
        ),
        controllers=CONTROLLERS,
    )
    watched = cluster.start_control_plane(layout.cluster, bin_dir, started, plane)
    c = layout.cluster
    host.install_rules(api_port(layout))
    watched["kube-scheduler"] = cluster.spawn(
        c,
        "kube-scheduler",
        [
            str(bin_dir / "kube-scheduler"),
            f"--kubeconfig={c.kubeconfig}",
            "--leader-elect=false",
            "--secure-port=0",
        ],
    )
    watched["containerd"] = _start_containerd(layout)
    cluster.wait_for(c, f"containerd serving on {layout.socket}", lambda: _containerd_ready(layout), watched, started)
    images.import_archive(layout.socket, images.pause_archive())
    watched["kubelet"] = _start_kubelet(layout, bin_dir, watched["containerd"].pid)
    cluster.wait_for(
        c, f"node {configs.NODE_NAME} ready", lambda: cluster.node_ready(c, configs.NODE_NAME), watched, started
    )
    cluster.wait_for(
        c, "default ServiceAccount created", lambda: cluster.default_service_account_exists(c), watched, started
    )
    say(f"cluster with a real node up in {time.monotonic() - started:.1f} s; KUBECONFIG={c.kubeconfig}")


def _start_containerd(layout: NodeLayout) -> subprocess.Popen[bytes]:
    node = layout.node
    for directory in (node, layout.socket.parent, layout.cni_conf_dir, layout.pod_logs, layout.kubelet_root):
        directory.mkdir(parents=True, exist_ok=True)
    if len(str(layout.socket)) > 100:
        raise NodeError(f"{layout.socket}: too long for a unix socket; set REALNODE_DIR to a shorter path")
    layout.containerd_config.write_text(
        configs.containerd_config(
            root=node / "containerd",
            state=node / "containerd-state",
            socket=layout.socket,
            runc_root=node / "runc",
            cni_conf_dir=layout.cni_conf_dir,
        )
    )
    (layout.cni_conf_dir / "10-scheduledbot.conflist").write_text(
        json.dumps(configs.cni_conflist(ipam_dir=node / "cni" / "ipam"), indent=2)
    )
    binds: list[str] = []
    for target in configs.HOST_PATHS:
        source = layout.bind_source(target)
        source.mkdir(parents=True, exist_ok=True)
        # A mount point must exist on the host; `down` removes it if it did not before.
        Path(target).mkdir(parents=True, exist_ok=True)
        binds += [str(source), target]
    argv = [
        *_in_node_cgroup(),
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-ec",
        _WITH_BINDS,
        "binds",
        *binds,
        "--",
        "containerd",
        f"--config={layout.containerd_config}",
    ]
    return cluster.spawn(layout.cluster, "containerd", argv)


def _in_node_cgroup() -> list[str]:
    return ["sh", "-ec", _IN_CGROUP, "in-cgroup", configs.NODE_CGROUP]


def _containerd_ready(layout: NodeLayout) -> bool:
    if not layout.socket.exists():
        return False
    result = subprocess.run(
        ["ctr", f"--address={layout.socket}", "version"], capture_output=True, timeout=10, check=False
    )
    return result.returncode == 0


def _start_kubelet(layout: NodeLayout, bin_dir: Path, containerd_pid: int) -> subprocess.Popen[bytes]:
    c = layout.cluster
    p = c.pki
    cluster.write_kubeconfig(
        c,
        json.loads(c.state.read_text())["server"],
        user=(p.node_client_cert, p.node_client_key),
        path=layout.kubelet_kubeconfig,
    )
    kubelet_port, healthz_port = free_ports(2)
    config = configs.kubelet_config(
        port=kubelet_port,
        healthz_port=healthz_port,
        socket=layout.socket,
        pod_logs_dir=layout.pod_logs,
        ca_cert=p.ca_cert,
        tls_cert=p.kubelet_cert,
        tls_key=p.kubelet_key,
    )
    layout.kubelet_config.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [
        *_in_node_cgroup(),
        # In containerd's mount namespace: Pod volumes the kubelet mounts must be what runc binds.
        "nsenter",
        f"--mount=/proc/{containerd_pid}/ns/mnt",
        "--",
        str(bin_dir / "kubelet"),
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={layout.kubelet_kubeconfig}",
        f"--root-dir={layout.kubelet_root}",
        f"--hostname-override={configs.NODE_NAME}",
        f"--node-ip={configs.NODE_IP}",
        "--v=1",
    ]
    return cluster.spawn(c, "kubelet", argv)


# --- down ---------------------------------------------------------------------------------------------


def _teardown(layout: NodeLayout) -> None:
    """Stop everything and undo the node's changes to the host; safe to repeat."""
    refs = _refs(layout)

    def stop(names: tuple[str, ...], grace: float) -> None:
        procs.stop_groups([r for n in names if (r := refs[n]) is not None], grace=grace)

    # The kubelet first, so that it does not restart what is being stopped.
    stop(("kubelet",), 5)
    # Pods, shims and containerd: nothing in there needs a graceful stop at teardown.
    host.kill_cgroup()
    stop(("kube-scheduler", "kube-controller-manager"), 5)
    stop(("kube-apiserver",), 2)
    stop(("etcd",), 5)
    strays = [r for r in map(procs.ProcessRef.of, _stray_processes(layout)) if r is not None]
    if strays:
        say(f"stopping {len(strays)} process(es) without a pid file")
        procs.stop_groups(strays, grace=5)
    procs.wait_reaped([r for r in (*refs.values(), *strays) if r is not None], timeout=3)
    for component in COMPONENTS:
        layout.cluster.pidfile(component).unlink(missing_ok=True)
    host.remove_cgroup()
    host.remove_rules()
    host.delete_bridge()
    found = _read_found(layout)
    if found is None:
        return
    for what in host.remove_kubelet_chains(found["iptables"]):
        say(f"removed iptables {what} (the kubelet's)")
    for what in host.restore_sysctls(found["sysctls"]):
        say(f"restored {what}")
    for path in configs.HOST_PATHS:
        if not found["paths"].get(path) and Path(path).is_dir():
            try:
                Path(path).rmdir()
            except OSError as error:
                say(f"left {path} in place: {error}")


def _read_found(layout: NodeLayout) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = json.loads(layout.as_found.read_text())
        return found
    except (OSError, ValueError):
        return None


def _stray_processes(layout: NodeLayout) -> list[int]:
    """Pids of this node's processes whose pid files were lost (the cgroup holds the node's others)."""
    names = (*CONTROL_PLANE, "containerd", "kubelet", "unshare", "nsenter")
    return procs.component_processes(names, str(layout.root))


def down(layout: NodeLayout = DEFAULT_LAYOUT) -> list[str]:
    """Stop the cluster and the node; what still differs from the host as found (empty: nothing)."""
    started = time.monotonic()
    with _machine_lock() as owner, cluster.locked(layout.cluster):
        _teardown(layout)
        with contextlib.suppress(OSError):
            if Path(owner.read_text().strip()) == layout.root:
                owner.unlink()
        found = _read_found(layout)
        left = host.differences(found, host.capture(_markers(layout))) if found is not None else []
    for difference in left:
        say(f"not as found: {difference}")
    say(f"stopped in {time.monotonic() - started:.1f} s" + ("" if left else "; the host is as found"))
    return left


# --- status ---------------------------------------------------------------------------------------------


def status(layout: NodeLayout = DEFAULT_LAYOUT) -> bool:
    for component, ref in _refs(layout).items():
        running = f"running (pid {ref.pid})" if ref is not None and ref.alive() else "not running"
        say(f"{component:24} {running}")
    ok = healthy(layout)
    say(f"KUBECONFIG={layout.cluster.kubeconfig}" if ok else "not healthy; `make cluster-real` starts it afresh")
    return ok
