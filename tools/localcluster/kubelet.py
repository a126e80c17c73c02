"""A fake kubelet: each Pod's first container runs as a local process.

Test tooling only. It gives the local control plane one Ready Node and makes
Pods behave, as seen through the API, like Pods on a real node, without
containers: the Pod's `command` + `args` run as a plain process on this machine.

What it does
------------
- Registers Node `local-node` (Ready; no taints) and renews its Lease.
- Schedules: binds every unbound Pod to the node (pods/binding) unless its
  nodeSelector does not match the node's labels (then PodScheduled=False,
  Unschedulable, as the scheduler reports); Pods with schedulingGates wait.
  There is no other scheduler.
- Runs the first container of each Pod bound to the node: `command` + `args`
  after `$(VAR)` expansion, exec'd without a shell, in its own session, with
  cwd `.cluster/pods/<namespace>_<name>/` and stdout/stderr appended to
  `<container>.log` there (`kubectl logs [-f] [--previous]` reads it).
- Gives each Pod its own loopback address 127.0.0.N (N from 10, then
  127.0.1.1 ...) as status.podIP/podIPs; an address is reused once its Pod's
  process is gone for good. A lock file per address under
  /tmp/localcluster-pod-ips keeps two clusters on one machine apart.
- Reports status as a kubelet does: Pending (ContainerCreating) first, then
  Running with conditions and containerStatuses; Ready follows an httpGet or
  tcpSocket readinessProbe (periodSeconds, initialDelaySeconds,
  timeoutSeconds, success/failureThreshold), or the start when there is none.
- On exit: restartPolicy Never, or OnFailure after exit 0, ends the Pod
  Succeeded/Failed with state.terminated (exitCode, Completed/Error);
  otherwise the container restarts after a back-off (1 s doubling to 60 s,
  the values of the ReduceDefaultCrashLoopBackOffDecay feature, friendlier to
  tests than the classic 10 s..5 min), shown as waiting CrashLoopBackOff.
- A command that cannot be exec'd (not found, not executable, or no command
  at all: there is no image entrypoint to fall back on) is a StartError with
  exit code 128, handled by the restart policy as any other exit.
- An image on a registry host of the reserved `.invalid` TLD (for example
  `unpullable.invalid/bot:1`) never starts: waiting ErrImagePull, then
  ImagePullBackOff, with containerd's message.
- On deletion: SIGTERM to the process group, the Pod's grace period, SIGKILL,
  a final status, then delete with gracePeriodSeconds=0 (which removes the
  object). The Pod directory goes when the Pod is gone.

Conventions (what differs from a container)
-------------------------------------------
- Environment: the Pod's env (literal values, fieldRef metadata.name,
  metadata.namespace, metadata.uid, metadata.labels['k'],
  metadata.annotations['k'], spec.nodeName, spec.serviceAccountName,
  status.podIP(s), status.hostIP(s); secretKeyRef; configMapKeyRef) and
  envFrom, on top of PATH and HOME of the kubelet itself (so `python` and the
  venv's console scripts resolve) and HOSTNAME=<pod name>. One variable is
  added: LOCALCLUSTER_POD_DIR, the Pod directory, by which `down` finds Pod
  processes whose pid file is lost.
- Volumes: secret, configMap and emptyDir volumes are materialized under
  `<pod dir>/volumes/<mountPath>` (no subPath; other volume types, such as
  the projected service-account token, are not mounted: bot Pods get no API
  credentials anyway). Any env value, command or args element that starts
  with a volumeMount's mountPath is rewritten to that directory, so
  `BOT_TOKEN_FILE=/var/run/secrets/meetingbots.dev/token/token` names the
  real file. Volumes are written each time the container starts.
- The image is not run (only the `.invalid` rule above reads it); only the
  first container runs; init containers, liveness/startup probes, resources
  and securityContext are ignored, exec readiness probes count as passing;
  no Events are written.

After a kubelet restart
-----------------------
The kubelet treats its own restart like a node reboot: Pod processes of the
previous run are killed and their directories removed at start-up. A Pod
whose container was running (or had exited, waiting for a restart) is then
handled as a real kubelet handles a container that vanished: its last state
is terminated with exitCode 137, reason ContainerStatusUnknown, and the
restart policy decides: Always/OnFailure restart it (restartCount + 1), Never
ends the Pod Failed. Adopting the old processes instead would lose their exit
codes: they are not our children, so nothing can wait() for them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import aiohttp
from aiohttp import web

from localcluster import procs
from localcluster.kubeapi import Api, ApiError, load_kubeconfig, now, now_micro
from localcluster.pods import HOST_IP, Addresses, PodWorker
from localcluster.podspec import Obj

log = logging.getLogger("kubelet")

LEASE_RENEW_SECONDS: Final = 10.0
NODE_HEARTBEAT_SECONDS: Final = 60.0


class Kubelet:
    def __init__(self, api: Api, node_name: str, pods_dir: Path, server_port: int) -> None:
        self.api = api
        self.node_name = node_name
        self.pods_dir = pods_dir
        self.server_port = server_port
        self.addresses = Addresses()
        self.workers: dict[str, PodWorker] = {}
        self.worker_tasks: dict[Path, asyncio.Task[None]] = {}
        self.pending_binds: set[str] = set()
        self.probe_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=64))
        self.background: set[asyncio.Task[None]] = set()

    def labels(self) -> dict[str, str]:
        return {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
        }

    def spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- start-up

    def clean_previous_run(self) -> None:
        """Kill the Pod processes of a previous kubelet: a restart is a reboot."""
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        refs = {procs.ProcessRef.read(d / "pid") for d in self.pods_dir.iterdir()}
        strays = procs.marked_processes(f"{procs.POD_MARKER_VAR}={self.pods_dir}/")
        refs |= {procs.ProcessRef.of(pid) for pid in strays}
        live = [r for r in refs if r is not None and r.alive()]
        if live:
            log.info("killing %d process(es) of a previous run", len(live))
            procs.stop_groups(live, grace=0)
        for entry in self.pods_dir.iterdir():
            shutil.rmtree(entry, ignore_errors=True)

    async def register_node(self) -> None:
        version = (await self.api.call("GET", "/version")).get("gitVersion", "")
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": self.labels()},
        }
        with contextlib.suppress(ApiError):
            await self.api.call("POST", "/api/v1/nodes", body=node)
        meminfo = Path("/proc/meminfo").read_text().split()
        memory = f"{meminfo[meminfo.index('MemTotal:') + 1]}Ki"
        capacity = {
            "cpu": str(os.cpu_count() or 1),
            "memory": memory,
            "pods": "1000",
            "ephemeral-storage": f"{shutil.disk_usage(self.pods_dir).total // 1024}Ki",
        }
        at = now()
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": self.node_conditions(at, at),
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.server_port}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": platform.release(),
                "osImage": "localcluster",
                "containerRuntimeVersion": "localcluster://1",
                "kubeletVersion": version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": self.labels()["kubernetes.io/arch"],
            },
        }
        await self.api.call(
            "PATCH", f"/api/v1/nodes/{self.node_name}/status", body={"status": status}, patch="merge-patch"
        )
        log.info("node %s registered, Ready", self.node_name)

    @staticmethod
    def node_conditions(heartbeat: str, transition: str) -> list[Obj]:
        def condition(type_: str, status: str, reason: str, message: str) -> Obj:
            return {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": transition,
            }

        return [
            condition(
                "MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"
            ),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ]

    async def heartbeat(self) -> None:
        """Lease every 10 s, Node status every minute, as a kubelet does."""
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        transition = now()
        last_node_update = time.monotonic()
        while True:
            try:
                renewal = {"spec": {"renewTime": now_micro()}}
                try:
                    await self.api.call("PATCH", lease_path, body=renewal, patch="merge-patch")
                except ApiError as error:
                    if error.status != 404:
                        raise
                    node = await self.api.call("GET", f"/api/v1/nodes/{self.node_name}")
                    lease = {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {
                            "name": self.node_name,
                            "namespace": "kube-node-lease",
                            "ownerReferences": [
                                {
                                    "apiVersion": "v1",
                                    "kind": "Node",
                                    "name": self.node_name,
                                    "uid": node["metadata"]["uid"],
                                }
                            ],
                        },
                        "spec": {
                            "holderIdentity": self.node_name,
                            "leaseDurationSeconds": 40,
                            "renewTime": now_micro(),
                        },
                    }
                    await self.api.call(
                        "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body=lease
                    )
                if time.monotonic() - last_node_update >= NODE_HEARTBEAT_SECONDS:
                    last_node_update = time.monotonic()
                    await self.api.call(
                        "PATCH",
                        f"/api/v1/nodes/{self.node_name}/status",
                        body={"status": {"conditions": self.node_conditions(now(), transition)}},
                        patch="strategic-merge-patch",
                    )
            except (ApiError, aiohttp.ClientError, TimeoutError) as error:
                log.warning("heartbeat failed: %s", error)
            await asyncio.sleep(LEASE_RENEW_SECONDS)

    # -- Pods

    async def watch_pods(self) -> None:
        """List, then watch, all Pods: the unbound ones to bind, ours to run."""
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    pods = await self.api.call("GET", "/api/v1/pods")
                    resource_version = pods["metadata"]["resourceVersion"]
                    self.resync(pods["items"])
                async for event in self.api.watch("/api/v1/pods", resource_version):
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        # Mostly 410 Gone: the resource version is too old.
                        log.info("watch: %s; relisting", obj.get("message"))
                        resource_version = None
                        break
                    resource_version = obj["metadata"]["resourceVersion"]
                    if event["type"] == "DELETED":
                        self.pod_removed(obj)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self.pod_seen(obj)
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as error:
                log.warning("watch failed: %s", error)
                await asyncio.sleep(1)

    def resync(self, pods: list[Obj]) -> None:
        present = {p["metadata"]["uid"] for p in pods}
        for uid, worker in list(self.workers.items()):
            if uid not in present:
                self.pod_removed(worker.pod)
        for pod in pods:
            self.pod_seen(pod)

    def pod_seen(self, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        node = pod["spec"].get("nodeName")
        if not node:
            if (
                uid not in self.pending_binds
                and not pod["metadata"].get("deletionTimestamp")
                and not pod["spec"].get("schedulingGates")
            ):
                self.pending_binds.add(uid)
                self.spawn(self.bind(pod))
            return
        if node != self.node_name:
            return
        worker = self.workers.get(uid)
        if worker is not None:
            worker.update(pod)
            return
        worker = PodWorker(
            pod,
            api=self.api,
            addresses=self.addresses,
            probe_session=self.probe_session,
            pods_dir=self.pods_dir,
        )
        self.workers[uid] = worker
        previous = self.worker_tasks.get(worker.dir)
        task = asyncio.create_task(worker.run(previous))
        self.worker_tasks[worker.dir] = task

        def done(finished: asyncio.Task[None], directory: Path = worker.dir) -> None:
            if self.worker_tasks.get(directory) is finished:
                del self.worker_tasks[directory]
            if not finished.cancelled() and finished.exception() is not None:
                log.error("pod worker failed", exc_info=finished.exception())

        task.add_done_callback(done)

    def pod_removed(self, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        self.pending_binds.discard(uid)
        worker = self.workers.pop(uid, None)
        if worker is not None:
            worker.update(pod)
            worker.gone()

    async def bind(self, pod: Obj) -> None:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        selector = pod["spec"].get("nodeSelector") or {}
        labels = self.labels()
        if any(labels.get(k) != v for k, v in selector.items()):
            log.info("%s: nodeSelector %s does not match; unschedulable", key, selector)
            condition = {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
                "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
                "lastProbeTime": None,
                "lastTransitionTime": now(),
            }
            with contextlib.suppress(ApiError, aiohttp.ClientError, TimeoutError):
                await self.api.call_retrying(
                    "PATCH",
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                    body={"status": {"conditions": [condition]}},
                    patch="strategic-merge-patch",
                )
            return
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            await self.api.call_retrying(
                "POST", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", body=binding
            )
            log.info("%s: bound to %s", key, self.node_name)
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            log.warning("%s: binding failed: %s", key, error)
            # The next event for this Pod (or the next relist) tries again.
            self.pending_binds.discard(meta["uid"])

    # -- logs, for `kubectl logs` through the apiserver

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        """`kubectl logs`: the container's log file, then (with follow) what it appends."""
        namespace, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        worker = next((w for w in self.workers.values() if (w.namespace, w.name) == (namespace, pod)), None)
        if worker is None or worker.container["name"] != container:
            raise web.HTTPNotFound(text=f"container {container} of pod {namespace}/{pod} not found\n")
        previous = request.query.get("previous") == "true"
        path = worker.previous_log_path if previous else worker.log_path
        if not path.exists():
            raise web.HTTPBadRequest(text=f'container "{container}" in pod "{pod}" is waiting to start\n')
        follow = request.query.get("follow") == "true" and not previous
        process_exit = worker.exit
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        with open(path, "rb") as file:
            data = file.read()
            if "tailLines" in request.query:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[max(len(lines) - int(request.query["tailLines"]), 0) :])
            if "limitBytes" in request.query:
                data = data[: int(request.query["limitBytes"])]
            await response.prepare(request)
            try:
                await response.write(data)
                # Following polls the file, but only while a client follows.
                while follow:
                    chunk = file.read(65536)
                    if chunk:
                        await response.write(chunk)
                    elif worker.removed.is_set() or process_exit is None or process_exit.done():
                        break
                    else:
                        await asyncio.sleep(0.2)
                await response.write_eof()
            except ConnectionResetError:
                pass  # the client (`kubectl logs -f` interrupted) went away
        return response

    async def serve(self, ssl_context: ssl.SSLContext, sock: socket.socket) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        return runner


def _server_ssl_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


async def main_async(args: argparse.Namespace) -> None:
    server, ssl_context = load_kubeconfig(args.kubeconfig)
    api = Api(server, ssl_context)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST_IP, 0))
    kubelet = Kubelet(api, args.node_name, args.pods_dir, sock.getsockname()[1])
    kubelet.clean_previous_run()
    runner = await kubelet.serve(
        _server_ssl_context(args.tls_cert_file, args.tls_private_key_file, args.client_ca_file), sock
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await _retry_until_ready(kubelet.register_node)
    tasks = [asyncio.create_task(kubelet.heartbeat()), asyncio.create_task(kubelet.watch_pods())]
    await stop.wait()
    # Pod processes live on, as containers outlive a stopped kubelet; the
    # next start (or `localcluster down`) deals with them.
    log.info("stopping")
    for task in tasks:
        task.cancel()
    await runner.cleanup()
    await kubelet.probe_session.close()
    await api.close()


async def _retry_until_ready(step: Callable[[], Awaitable[None]]) -> None:
    delay = 0.2
    while True:
        try:
            await step()
            return
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            log.info("apiserver not ready yet: %s", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5)


def _raise_open_file_limit() -> None:
    # Two descriptors per Pod (its pidfd and its address lock): the usual soft
    # limit of 1024 would cap the node near 500 Pods. Go programs (the real
    # kubelet among them) raise it the same way at start.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m localcluster.kubelet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--pods-dir", type=Path, required=True)
    parser.add_argument("--node-name", default="local-node")
    parser.add_argument("--tls-cert-file", type=Path, required=True)
    parser.add_argument("--tls-private-key-file", type=Path, required=True)
    parser.add_argument("--client-ca-file", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    _raise_open_file_limit()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
