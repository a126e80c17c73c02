"""A fake kubelet: each Pod's first container runs as a local process.

Test tooling only. It gives the local control plane one Ready Node and makes
Pods behave, as seen through the API, like Pods on a real node, without
containers: the Pod's `command` + `args` run as a plain process on this machine.

What it does
------------
- Registers Node `local-node` (Ready; no taints) and renews its Lease.
- Schedules: binds every unbound Pod to the node (pods/binding) unless its
  nodeSelector does not match the node's labels (then PodScheduled=False,
  Unschedulable, as the scheduler reports). There is no other scheduler.
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
  real file. Volumes are written once, when the container starts.
- The image is not run (only the `.invalid` rule above reads it); only the
  first container runs; init containers, liveness/startup probes, exec
  probes, resources and securityContext are ignored; no Events are written.

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
import base64
import contextlib
import datetime
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any, Final

import aiohttp
import yaml
from aiohttp import web

from localcluster import podspec, procs
from localcluster.podspec import Obj

log = logging.getLogger("kubelet")

HOST_IP: Final = "127.0.0.1"
ADDRESS_LOCK_DIR: Final = Path(tempfile.gettempdir()) / "localcluster-pod-ips"
LEASE_RENEW_SECONDS: Final = 10.0
NODE_HEARTBEAT_SECONDS: Final = 60.0
CRASHLOOP_INITIAL_SECONDS: Final = 1.0
CRASHLOOP_MAX_SECONDS: Final = 60.0
# A container that ran this long without a crash starts its back-off afresh.
CRASHLOOP_RESET_SECONDS: Final = 600.0
MIN_KILL_GRACE_SECONDS: Final = 2.0  # the kubelet's minimumGracePeriodInSeconds
CONFIG_RETRY_MAX_SECONDS: Final = 4.0
PATCH_ATTEMPTS: Final = 5
OUR_CONDITIONS: Final = (
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- API access ----------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def load_kubeconfig(path: Path) -> tuple[str, ssl.SSLContext]:
    """Server URL and a TLS context from the current context of a kubeconfig."""
    config = yaml.safe_load(path.read_text())
    context_name = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])

    def pem(kind: str) -> bytes:
        if f"{kind}-data" in user or f"{kind}-data" in cluster:
            return base64.b64decode(user.get(f"{kind}-data") or cluster[f"{kind}-data"])
        source = user.get(kind) or cluster[kind]
        return (path.parent / source).read_bytes()

    ssl_context = ssl.create_default_context(cadata=pem("certificate-authority").decode())
    # load_cert_chain reads files only; the key never outlives this block.
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "cert"), Path(tmp, "key")
        cert.write_bytes(pem("client-certificate"))
        key.write_bytes(pem("client-key"))
        ssl_context.load_cert_chain(cert, key)
    return cluster["server"], ssl_context


class Api:
    """The few REST calls the kubelet makes, on one pooled HTTPS session."""

    def __init__(self, server: str, ssl_context: ssl.SSLContext) -> None:
        self.server = server
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context, limit=32),
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Obj | None = None,
        patch: str | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> Obj:
        headers = {"Content-Type": f"application/{patch}+json" if patch else "application/json"}
        async with self.session.request(
            method, self.server + path, data=json.dumps(body) if body is not None else None, headers=headers
        ) as response:
            text = await response.text()
            try:
                result = json.loads(text)
            except ValueError:
                result = text
            if response.status not in ok:
                raise ApiError(response.status, result)
            return result if isinstance(result, dict) else {}

    async def call_retrying(self, method: str, path: str, **kwargs: Any) -> Obj | None:
        """`call`, retried on transient failures; None when the object is gone."""
        for attempt in range(PATCH_ATTEMPTS):
            try:
                return await self.call(method, path, **kwargs)
            except ApiError as error:
                if error.status in (404, 409):
                    return None
                if error.status not in (429, 500, 503, 504) or attempt == PATCH_ATTEMPTS - 1:
                    raise
            except (aiohttp.ClientError, asyncio.TimeoutError):
                if attempt == PATCH_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(0.2 * 2**attempt)
        return None

    async def watch(self, path: str, resource_version: str) -> AsyncIterator[Obj]:
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "600",
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=660)
        async with self.session.get(self.server + path, params=params, timeout=timeout) as response:
            if response.status != 200:
                raise ApiError(response.status, await response.text())
            # Not `async for line in response.content`: its line length limit
            # is below the size of a Pod with large managedFields.
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)

    async def close(self) -> None:
        await self.session.close()


# --- Pod addresses ---------------------------------------------------------------------------


class Addresses:
    """Loopback addresses for Pods, lowest free first.

    An address is ours while we hold an flock on its file; the lock dies with
    the kubelet, so a crashed cluster never leaks addresses to the next one.
    """

    def __init__(self) -> None:
        ADDRESS_LOCK_DIR.mkdir(exist_ok=True)
        self.held: dict[str, IO[bytes]] = {}

    @staticmethod
    def _candidates() -> Iterator[str]:
        for b in range(256):
            for c in range(256):
                first = 10 if (b, c) == (0, 0) else 1
                for d in range(first, 255):
                    yield f"127.{b}.{c}.{d}"

    def allocate(self) -> str:
        for address in self._candidates():
            if address in self.held:
                continue
            lock = open(ADDRESS_LOCK_DIR / address, "wb")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self.held[address] = lock
            return address
        raise RuntimeError("no free loopback address")

    def release(self, address: str) -> None:
        lock = self.held.pop(address, None)
        if lock is not None:
            lock.close()


# --- one Pod -------------------------------------------------------------------------------------


class ConfigError(Exception):
    """The container cannot be created yet (a missing Secret, ConfigMap or key)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class StartError(Exception):
    """The container's command could not be exec'd."""


class PodWorker:
    """Owns one Pod bound to this node, from first sight until it is gone.

    `run` waits for the deletion request while `_lifecycle` starts, watches
    and restarts the container; deletion cancels the lifecycle and then stops
    the process, so every stage (image pull, back-off, running) is
    interruptible the same way.
    """

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.dir = kubelet.pods_dir / f"{self.namespace}_{self.name}"
        self.container: Obj = pod["spec"]["containers"][0]
        self.restart_policy: str = pod["spec"].get("restartPolicy", "Always")
        self.address: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.exit: asyncio.Future[int] | None = None
        self.deleting = asyncio.Event()
        self.removed = asyncio.Event()
        self.restart_count = 0
        self.start_time = pod.get("status", {}).get("startTime") or now()
        self.condition_times: dict[str, tuple[str, str]] = {}
        self.last_status: Obj | None = None
        self.task: asyncio.Task[None] | None = None
        self.update(pod)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.container['name']}.log"

    @property
    def previous_log_path(self) -> Path:
        return self.dir / f"{self.container['name']}.previous.log"

    def update(self, pod: Obj) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()

    def gone(self) -> None:
        self.removed.set()
        self.deleting.set()

    async def run(self, previous: asyncio.Task[None] | None) -> None:
        # A Pod of the same name that was just removed may still be tearing
        # down the directory this one is going to use.
        if previous is not None:
            await asyncio.wait([previous])
        lifecycle = asyncio.create_task(self._lifecycle())
        await self.deleting.wait()
        lifecycle.cancel()
        await asyncio.wait([lifecycle])
        if not lifecycle.cancelled() and lifecycle.exception() is not None:
            log.error("%s: lifecycle failed", self.key, exc_info=lifecycle.exception())
        await self._stop_process()
        if not self.removed.is_set():
            with contextlib.suppress(ApiError, aiohttp.ClientError, asyncio.TimeoutError):
                await self.kubelet.api.call_retrying(
                    "DELETE",
                    f"/api/v1/namespaces/{self.namespace}/pods/{self.name}",
                    body={
                        "apiVersion": "v1",
                        "kind": "DeleteOptions",
                        "gracePeriodSeconds": 0,
                        "preconditions": {"uid": self.uid},
                    },
                )
        await self.removed.wait()
        self._release_address()
        shutil.rmtree(self.dir, ignore_errors=True)
        log.info("%s: removed", self.key)

    # -- lifecycle

    async def _lifecycle(self) -> None:
        status = self.pod.get("status", {})
        if status.get("phase") in podspec.TERMINAL_PHASES:
            return
        self.address = self.kubelet.addresses.allocate()
        self.dir.mkdir(parents=True, exist_ok=True)
        image = self.container.get("image", "")
        previous = (status.get("containerStatuses") or [{}])[0]
        self.restart_count = previous.get("restartCount", 0)
        last_state: Obj = {}
        if "running" in previous.get("state", {}) or "terminated" in previous.get("state", {}):
            # Left over from before a kubelet restart: the process is gone.
            last_state = self._terminated(
                137,
                "ContainerStatusUnknown",
                "The container could not be located when the pod was terminated",
                started_at=previous["state"].get("running", {}).get("startedAt"),
            )
            if not podspec.should_restart(self.restart_policy, 137):
                await self._finish(last_state["terminated"])
                return
            self.restart_count += 1
        await self._report(state=self._waiting("ContainerCreating"), last_state=last_state)

        if podspec.unpullable(image):
            error = podspec.pull_error(image)
            await self._report(state=self._waiting("ErrImagePull", error))
            await asyncio.sleep(1)
            await self._report(
                state=self._waiting("ImagePullBackOff", f'Back-off pulling image "{image}": ErrImagePull: {error}')
            )
            return

        backoff = CRASHLOOP_INITIAL_SECONDS
        while True:
            argv, env = await self._prepare(last_state)
            started_at = now()
            started = time.monotonic()
            try:
                exit_code = await self._run_container(argv, env, started_at, last_state)
                reason, message = podspec.exit_reason(exit_code), ""
            except StartError as error:
                exit_code, reason, message = 128, "StartError", str(error)
            terminated = self._terminated(exit_code, reason, message, started_at=started_at)
            if not podspec.should_restart(self.restart_policy, exit_code):
                await self._finish(terminated["terminated"])
                return
            if time.monotonic() - started > CRASHLOOP_RESET_SECONDS:
                backoff = CRASHLOOP_INITIAL_SECONDS
            self.restart_count += 1
            last_state = terminated
            name = self.container["name"]
            await self._report(
                state=self._waiting(
                    "CrashLoopBackOff",
                    f"back-off {backoff:.0f}s restarting failed container={name} "
                    f"pod={self.name}_{self.namespace}({self.uid})",
                ),
                last_state=last_state,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, CRASHLOOP_MAX_SECONDS)

    async def _prepare(self, last_state: Obj) -> tuple[list[str], dict[str, str]]:
        """Command and environment, retried while a Secret or ConfigMap is missing."""
        delay = 0.5
        while True:
            try:
                mounts = await self._write_volumes()
                env = await self._environment(mounts)
                break
            except ConfigError as error:
                await self._report(state=self._waiting(error.reason, error.message), last_state=last_state)
                await asyncio.sleep(delay)
                delay = min(delay * 2, CONFIG_RETRY_MAX_SECONDS)
        argv = [
            podspec.rewrite_mount_paths(podspec.expand(arg, env), mounts)
            for arg in self.container.get("command", []) + self.container.get("args", [])
        ]
        return argv, env

    async def _run_container(
        self, argv: list[str], env: dict[str, str], started_at: str, last_state: Obj
    ) -> int:
        """Start the process, report it, and return its exit code when it ends."""
        self.process = self.exit = None
        if not self.container.get("command"):
            raise StartError(
                "the fake kubelet runs no image entrypoint: the container needs a command"
            )
        if self.log_path.exists():
            self.log_path.replace(self.previous_log_path)
        with open(self.log_path, "ab") as log_file:
            try:
                self.process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                    env=env,
                    start_new_session=True,
                )
            except OSError as error:
                if isinstance(error, FileNotFoundError) and "/" not in argv[0]:
                    cause = "executable file not found in $PATH"
                else:
                    cause = (error.strerror or str(error)).lower()
                # containerd's wording, so that messages match a real node's.
                raise StartError(
                    "failed to create containerd task: failed to create shim task: OCI runtime "
                    "create failed: runc create failed: unable to start container process: error "
                    f"during container init: exec: {json.dumps(argv[0])}: {cause}: unknown"
                ) from None
        ref = procs.ProcessRef.of(self.process.pid)
        if ref is not None:
            ref.write(self.dir / "pid")
        self.exit = self._exit_future(self.process)
        log.info("%s: started pid %d: %s", self.key, self.process.pid, argv)
        state = {"running": {"startedAt": started_at}}
        probe = self.container.get("readinessProbe")
        await self._report(state=state, last_state=last_state, ready=probe is None, started=True)
        prober = asyncio.create_task(self._probe_loop(probe, state, last_state)) if probe else None
        try:
            returncode = await asyncio.shield(self.exit)
        finally:
            if prober is not None:
                prober.cancel()
        (self.dir / "pid").unlink(missing_ok=True)
        exit_code = returncode if returncode >= 0 else 128 - returncode
        log.info("%s: exited with %d", self.key, exit_code)
        return exit_code

    def _exit_future(self, process: subprocess.Popen[bytes]) -> asyncio.Future[int]:
        """Resolves with the exit status; a pidfd costs no thread and no polling."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        pidfd = os.pidfd_open(process.pid)

        def exited() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            returncode = process.wait()
            # Like a container's end: whatever the main process left behind
            # in its group goes with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            if not future.done():
                future.set_result(returncode)

        loop.add_reader(pidfd, exited)
        return future

    async def _stop_process(self) -> None:
        if self.process is None or self.exit is None or self.exit.done():
            return
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        grace = max(float(grace), MIN_KILL_GRACE_SECONDS)
        log.info("%s: stopping pid %d (grace %.0f s)", self.key, self.process.pid, grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self.exit), grace)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        returncode = await self.exit
        (self.dir / "pid").unlink(missing_ok=True)
        if not self.removed.is_set():
            exit_code = returncode if returncode >= 0 else 128 - returncode
            reported = (self.last_status or {}).get("containerStatuses", [{}])[0].get("state", {})
            terminated = self._terminated(
                exit_code,
                podspec.exit_reason(exit_code),
                "",
                started_at=reported.get("running", {}).get("startedAt"),
            )
            with contextlib.suppress(ApiError, aiohttp.ClientError, asyncio.TimeoutError):
                await self._finish(terminated["terminated"])

    async def _finish(self, terminated: Obj) -> None:
        phase = "Succeeded" if terminated["exitCode"] == 0 else "Failed"
        await self._report(state={"terminated": terminated}, phase=phase)
        self._release_address()

    def _release_address(self) -> None:
        if self.address is not None:
            self.kubelet.addresses.release(self.address)

    # -- readiness

    async def _probe_loop(self, probe: Obj, state: Obj, last_state: Obj) -> None:
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        period = probe.get("periodSeconds", 10)
        success_threshold = probe.get("successThreshold", 1)
        failure_threshold = probe.get("failureThreshold", 3)
        ready, successes, failures = False, 0, 0
        while True:
            ok = await self._probe(probe)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if not ready and successes >= success_threshold:
                ready = True
            elif ready and failures >= failure_threshold:
                ready = False
            else:
                await asyncio.sleep(period)
                continue
            log.info("%s: ready=%s", self.key, ready)
            await self._report(state=state, last_state=last_state, ready=ready, started=True)
            await asyncio.sleep(period)

    async def _probe(self, probe: Obj) -> bool:
        timeout = probe.get("timeoutSeconds", 1)
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = podspec.container_port(self.container, get.get("port", 80))
            if port is None:
                return False
            scheme = get.get("scheme", "HTTP").lower()
            url = f"{scheme}://{get.get('host') or self.address}:{port}{get.get('path', '/')}"
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
            try:
                async with self.kubelet.probe_session.get(
                    url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), ssl=False
                ) as response:
                    return 200 <= response.status < 400
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return False
        if "tcpSocket" in probe:
            tcp = probe["tcpSocket"]
            port = podspec.container_port(self.container, tcp.get("port", 0))
            if port is None:
                return False
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(tcp.get("host") or self.address, port), timeout
                )
            except (OSError, asyncio.TimeoutError):
                return False
            writer.close()
            return True
        log.warning("%s: only httpGet and tcpSocket probes are supported; assuming ready", self.key)
        return True

    # -- configuration

    async def _get(self, kind: str, name: str, *, optional: bool) -> Obj | None:
        resource = {"Secret": "secrets", "ConfigMap": "configmaps"}[kind]
        try:
            return await self.kubelet.api.call(
                "GET", f"/api/v1/namespaces/{self.namespace}/{resource}/{name}"
            )
        except ApiError as error:
            if error.status != 404:
                raise
        if optional:
            return None
        reason = "CreateContainerConfigError"
        raise ConfigError(reason, f'{kind.lower()} "{name}" not found')

    @staticmethod
    def _values(kind: str, obj: Obj) -> dict[str, bytes]:
        if kind == "Secret":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        values = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        values.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return values

    async def _write_volumes(self) -> dict[str, Path]:
        """Materialize the mounted volumes; mountPath -> directory standing in for it."""
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes", [])}
        mounts: dict[str, Path] = {}
        for mount in self.container.get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})
            target = self.dir / "volumes" / mount["mountPath"].lstrip("/")
            if "emptyDir" in volume:
                target.mkdir(parents=True, exist_ok=True)
            elif "secret" in volume or "configMap" in volume:
                kind = "Secret" if "secret" in volume else "ConfigMap"
                source = volume["secret" if kind == "Secret" else "configMap"]
                name = source.get("secretName") or source.get("name", "")
                try:
                    obj = await self._get(kind, name, optional=source.get("optional", False))
                except ConfigError as error:
                    raise ConfigError(
                        "ContainerCreating",
                        f'MountVolume.SetUp failed for volume "{mount["name"]}" : {error.message}',
                    ) from None
                values = self._values(kind, obj) if obj is not None else {}
                items = source.get("items") or [{"key": k, "path": k} for k in values]
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir(parents=True)
                for item in items:
                    if item["key"] not in values:
                        continue
                    file = target / item["path"]
                    file.parent.mkdir(parents=True, exist_ok=True)
                    file.write_bytes(values[item["key"]])
                    file.chmod(item.get("mode", source.get("defaultMode", 0o644)))
            else:
                continue
            mounts[mount["mountPath"]] = target
        return mounts

    async def _environment(self, mounts: dict[str, Path]) -> dict[str, str]:
        assert self.address is not None
        variables: dict[str, str] = {}
        for source in self.container.get("envFrom", []):
            kind = "Secret" if "secretRef" in source else "ConfigMap"
            ref = source.get("secretRef") or source.get("configMapRef") or {}
            obj = await self._get(kind, ref.get("name", ""), optional=ref.get("optional", False))
            if obj is not None:
                for key, value in self._values(kind, obj).items():
                    variables[source.get("prefix", "") + key] = value.decode(errors="replace")
        for var in self.container.get("env", []):
            value_from = var.get("valueFrom")
            if value_from is None:
                variables[var["name"]] = podspec.expand(var.get("value", ""), variables)
            elif "fieldRef" in value_from:
                path = value_from["fieldRef"]["fieldPath"]
                value = podspec.field_value(self.pod, path, self.address, HOST_IP)
                if value is None:
                    log.warning("%s: unsupported fieldRef %s", self.key, path)
                    continue
                variables[var["name"]] = value
            elif "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
                kind = "Secret" if "secretKeyRef" in value_from else "ConfigMap"
                ref = value_from.get("secretKeyRef") or value_from["configMapKeyRef"]
                obj = await self._get(kind, ref["name"], optional=ref.get("optional", False))
                values = self._values(kind, obj) if obj is not None else {}
                if ref["key"] in values:
                    variables[var["name"]] = values[ref["key"]].decode(errors="replace")
                elif obj is not None and not ref.get("optional", False):
                    raise ConfigError(
                        "CreateContainerConfigError",
                        f"couldn't find key {ref['key']} in {kind} {self.namespace}/{ref['name']}",
                    )
            else:
                log.warning("%s: unsupported valueFrom in env %s", self.key, var["name"])
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": os.environ.get("HOME", "/root"),
            "HOSTNAME": self.name,
        }
        env.update({k: podspec.rewrite_mount_paths(v, mounts) for k, v in variables.items()})
        env[procs.POD_MARKER_VAR] = str(self.dir)
        return env

    # -- status

    def _waiting(self, reason: str, message: str = "") -> Obj:
        waiting = {"reason": reason}
        if message:
            waiting["message"] = message
        return {"waiting": waiting}

    def _terminated(self, exit_code: int, reason: str, message: str, *, started_at: str | None) -> Obj:
        terminated: Obj = {"exitCode": exit_code, "reason": reason, "finishedAt": now()}
        if started_at:
            terminated["startedAt"] = started_at
        if message:
            terminated["message"] = message
        if self.process is not None:
            terminated["containerID"] = self._container_id()
        return {"terminated": terminated}

    def _container_id(self) -> str:
        assert self.process is not None
        return f"localcluster://{self.process.pid}"

    def _condition(self, type_: str, status: bool, at: str, reason: str = "", message: str = "") -> Obj:
        value = "True" if status else "False"
        previous = self.condition_times.get(type_)
        if previous is None or previous[0] != value:
            self.condition_times[type_] = (value, at)
        condition: Obj = {
            "type": type_,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": self.condition_times[type_][1],
        }
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        return condition

    async def _report(
        self,
        *,
        state: Obj,
        last_state: Obj | None = None,
        ready: bool = False,
        started: bool = False,
        phase: str | None = None,
    ) -> None:
        """Write the Pod's status; one merge patch, skipped when nothing changed."""
        at = now()
        name = self.container["name"]
        image = self.container.get("image", "")
        terminal = phase in podspec.TERMINAL_PHASES
        if phase is None:
            # Running once a container ran, as the kubelet's getPhase has it.
            phase = "Running" if "running" in state or self.restart_count > 0 else "Pending"
        container_status: Obj = {
            "name": name,
            "image": image,
            "imageID": "",
            "ready": ready,
            "started": started,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": last_state or {},
        }
        if started or "terminated" in state:
            digest = hashlib.sha256(image.encode()).hexdigest()
            container_status["imageID"] = f"{image.split('@')[0]}@sha256:{digest}"
            if self.process is not None:
                container_status["containerID"] = self._container_id()
        not_ready = "PodCompleted" if terminal else "ContainersNotReady"
        not_ready_message = "" if terminal else f"containers with unready status: [{name}]"
        conditions = [
            self._condition("PodReadyToStartContainers", not terminal, at),
            self._condition("Initialized", True, at, "PodCompleted" if terminal else ""),
            self._condition("Ready", ready, at, "" if ready else not_ready, "" if ready else not_ready_message),
            self._condition(
                "ContainersReady", ready, at, "" if ready else not_ready, "" if ready else not_ready_message
            ),
            self._condition("PodScheduled", True, at),
        ]
        # Conditions others own (readiness gates, DisruptionTarget) survive
        # the list replacement that a merge patch does.
        conditions += [
            c for c in self.pod.get("status", {}).get("conditions") or [] if c["type"] not in OUR_CONDITIONS
        ]
        status: Obj = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "startTime": self.start_time,
            "containerStatuses": [container_status],
        }
        if self.address is not None:
            status["podIP"] = self.address
            status["podIPs"] = [{"ip": self.address}]
        if status == self.last_status:
            return
        try:
            await self.kubelet.api.call_retrying(
                "PATCH",
                f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status",
                body={"status": status},
                patch="merge-patch",
            )
        except (ApiError, aiohttp.ClientError, asyncio.TimeoutError) as error:
            # The Pod runs on; the next report carries the whole status again.
            log.warning("%s: status update failed: %s", self.key, error)
            return
        self.last_status = status


# --- the node -------------------------------------------------------------------------------------


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
        self.probe_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=64)
        )
        self.background: set[asyncio.Task[None]] = set()

    def labels(self) -> dict[str, str]:
        return {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                platform.machine(), platform.machine()
            ),
        }

    def spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- start-up

    def clean_previous_run(self) -> None:
        """Kill the Pod processes of a previous kubelet: a restart is a reboot."""
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        refs = [procs.ProcessRef.read(d / "pid") for d in self.pods_dir.iterdir()]
        strays = procs.marked_processes(f"{procs.POD_MARKER_VAR}={self.pods_dir}/")
        refs += [procs.ProcessRef.of(pid) for pid in strays]
        live = [r for r in refs if r is not None]
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
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
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
                                {"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": node["metadata"]["uid"]}
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
            except (ApiError, aiohttp.ClientError, asyncio.TimeoutError) as error:
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
            except (ApiError, aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
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
        worker = PodWorker(self, pod)
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
            with contextlib.suppress(ApiError, aiohttp.ClientError, asyncio.TimeoutError):
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
        except (ApiError, aiohttp.ClientError, asyncio.TimeoutError) as error:
            log.warning("%s: binding failed: %s", key, error)
            # The next event for this Pod (or the next relist) tries again.
            self.pending_binds.discard(meta["uid"])

    # -- logs, for `kubectl logs` through the apiserver

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        namespace, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        worker = next(
            (w for w in self.workers.values() if (w.namespace, w.name) == (namespace, pod)), None
        )
        if worker is None or worker.container["name"] != container:
            raise web.HTTPNotFound(text=f"container {container} of pod {namespace}/{pod} not found\n")
        previous = request.query.get("previous") == "true"
        path = worker.previous_log_path if previous else worker.log_path
        if not path.exists():
            raise web.HTTPBadRequest(
                text=f'container "{container}" in pod "{pod}" is waiting to start\n'
            )
        data = path.read_bytes()
        if "tailLines" in request.query:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(request.query["tailLines"]) :]) if int(request.query["tailLines"]) else b""
        if "limitBytes" in request.query:
            data = data[: int(request.query["limitBytes"])]
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(data)
        follow = request.query.get("follow") == "true" and not previous
        process_exit = worker.exit
        if follow:
            position = path.stat().st_size
            with open(path, "rb") as file:
                file.seek(position)
                while True:
                    chunk = file.read(65536)
                    if chunk:
                        await response.write(chunk)
                        continue
                    if worker.removed.is_set() or process_exit is None or process_exit.done():
                        break
                    await asyncio.sleep(0.2)
        await response.write_eof()
        return response

    async def serve(self, ssl_context: ssl.SSLContext, sock: Any) -> web.AppRunner:
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
        except (ApiError, aiohttp.ClientError, asyncio.TimeoutError) as error:
            log.info("apiserver not ready yet: %s", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5)


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
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
