"""Faults injected into the running local cluster: what a node, a kernel or an operator's hand does.

For the fault-injection suite (tools/chaos) and tests: freeze and thaw a control-plane
component (SIGSTOP/SIGCONT to its process group: its sockets stay open, nobody answers),
restart one (SIGTERM, or SIGKILL with `kill=True`, then the very same command line again,
on the same ports and data directory), and kill the process of a Pod behind its kubelet's
back (SIGKILL to the Pod's process group, as when a bot crashes).

The command line of a restarted component is read from /proc before it is stopped, so
nothing about how `cluster` starts it is duplicated here.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Final

from localcluster import cluster, procs

#: Components whose restart keeps the cluster usable (the kubelet's Pods are its children).
RESTARTABLE: Final = ("etcd", "kube-apiserver", "kube-controller-manager")


class FaultError(RuntimeError):
    pass


def _component(layout: cluster.Layout, component: str) -> procs.ProcessRef:
    if component not in cluster.COMPONENTS:
        raise FaultError(f"unknown component {component!r}; expected one of {', '.join(cluster.COMPONENTS)}")
    ref = procs.ProcessRef.read(layout.pidfile(component))
    if ref is None or not ref.alive():
        raise FaultError(f"{component} is not running (pid file {layout.pidfile(component)})")
    return ref


def pause(component: str, layout: cluster.Layout = cluster.DEFAULT_LAYOUT) -> None:
    """SIGSTOP the component: frozen mid-request, as a process the kernel stopped scheduling."""
    _component(layout, component).signal_group(signal.SIGSTOP)


def resume(component: str, layout: cluster.Layout = cluster.DEFAULT_LAYOUT) -> None:
    """SIGCONT: the frozen component carries on where it was."""
    _component(layout, component).signal_group(signal.SIGCONT)


def restart(component: str, *, kill: bool = False, layout: cluster.Layout = cluster.DEFAULT_LAYOUT) -> float:
    """Stop the component (SIGTERM, or SIGKILL) and start the same command again; seconds until it serves."""
    if component not in RESTARTABLE:
        raise FaultError(f"{component} cannot be restarted here; expected one of {', '.join(RESTARTABLE)}")
    ref = _component(layout, component)
    argv = [arg.decode() for arg in Path(f"/proc/{ref.pid}/cmdline").read_bytes().split(b"\0") if arg]
    began = time.monotonic()
    if kill:
        ref.signal_group(signal.SIGKILL)
        procs.stop_groups([ref], grace=0)
    else:
        ref.signal_group(signal.SIGCONT)  # a frozen process handles SIGTERM only once thawed
        procs.stop_groups([ref], grace=10)
    process = cluster.spawn(layout, component, argv)
    cluster.wait_for(
        layout, f"{component} serving again", lambda: _serves(layout, component), {component: process}, began
    )
    return time.monotonic() - began


def _serves(layout: cluster.Layout, component: str) -> bool:
    if component == "etcd":
        state = cluster._state(layout) or {}
        return b'"health":"true"' in cluster.http_get(f"http://127.0.0.1:{state.get('etcd_port')}/health")[1]
    if component == "kube-apiserver":
        return cluster.apiserver_ready(layout)
    return True  # the controller-manager has no endpoint here (--secure-port=0): started is all we know


def kill_pod_process(namespace: str, pod: str, layout: cluster.Layout = cluster.DEFAULT_LAYOUT) -> int:
    """SIGKILL the process of a Pod the fake kubelet runs (the bot crashes); its pid."""
    ref = procs.ProcessRef.read(layout.pods / f"{namespace}_{pod}" / "pid")
    if ref is None or not ref.alive():
        raise FaultError(f"pod {namespace}/{pod} has no running process")
    ref.signal_group(signal.SIGKILL)
    return ref.pid
