"""One Pod on the fake kubelet: its process, address, volumes and status.

See `localcluster.kubelet` for the behaviour and conventions as a whole.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final

import aiohttp

from localcluster import podspec, procs
from localcluster.kubeapi import Api, ApiError, now
from localcluster.podspec import Obj

log = logging.getLogger("kubelet")

HOST_IP: Final = "127.0.0.1"
ADDRESS_LOCK_DIR: Final = Path(tempfile.gettempdir()) / "localcluster-pod-ips"
CRASHLOOP_INITIAL_SECONDS: Final = 1.0
CRASHLOOP_MAX_SECONDS: Final = 60.0
# A container that ran this long without a crash starts its back-off afresh.
CRASHLOOP_RESET_SECONDS: Final = 600.0
MIN_KILL_GRACE_SECONDS: Final = 2.0  # the kubelet's minimumGracePeriodInSeconds
CONFIG_RETRY_MAX_SECONDS: Final = 4.0
OUR_CONDITIONS: Final = (
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
)


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
            # Held open for as long as the address is in use: closing it drops the lock.
            lock = open(ADDRESS_LOCK_DIR / address, "wb")  # noqa: SIM115
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

    def __init__(
        self,
        pod: Obj,
        *,
        api: Api,
        addresses: Addresses,
        probe_session: aiohttp.ClientSession,
        pods_dir: Path,
    ) -> None:
        self.api = api
        self.addresses = addresses
        self.probe_session = probe_session
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.dir = pods_dir / f"{self.namespace}_{self.name}"
        self.container: Obj = pod["spec"]["containers"][0]
        self.restart_policy: str = pod["spec"].get("restartPolicy", "Always")
        self.address: str | None = None
        # Cleared when the address goes back to the pool; `address` stays, as
        # the status of a finished Pod keeps showing its podIP.
        self.holds_address = False
        self.started_at: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.exit: asyncio.Future[int] | None = None
        self.deleting = asyncio.Event()
        self.removed = asyncio.Event()
        self.restart_count = 0
        self.start_time = pod.get("status", {}).get("startTime") or now()
        self.condition_times: dict[str, tuple[str, str]] = {}
        self.last_status: Obj | None = None
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
            with contextlib.suppress(ApiError, aiohttp.ClientError, TimeoutError):
                await self.api.call_retrying(
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
        self.address = self.addresses.allocate()
        self.holds_address = True
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
            self.started_at = now()
            started = time.monotonic()
            try:
                exit_code = await self._run_container(argv, env, last_state)
                reason, message = podspec.exit_reason(exit_code), ""
            except StartError as error:
                exit_code, reason, message = 128, "StartError", str(error)
            terminated = self._terminated(exit_code, reason, message, started_at=self.started_at)
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

    async def _run_container(self, argv: list[str], env: dict[str, str], last_state: Obj) -> int:
        """Start the process, report it, and return its exit code when it ends."""
        self.process = self.exit = None
        if not self.container.get("command"):
            raise StartError("the fake kubelet runs no image entrypoint: the container needs a command")
        if self.log_path.exists():
            self.log_path.replace(self.previous_log_path)
        with open(self.log_path, "ab") as log_file:
            try:
                self.process = procs.start_leader(argv, output=log_file, cwd=self.dir, env=env)
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
        state = {"running": {"startedAt": self.started_at}}
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
            # Like a container's end: whatever the main process left behind
            # in its group goes with it. Before wait(): until the zombie is
            # reaped, its pid (the group's id) cannot be reused by another.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            returncode = process.wait()
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
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        returncode = await self.exit
        (self.dir / "pid").unlink(missing_ok=True)
        if not self.removed.is_set():
            exit_code = returncode if returncode >= 0 else 128 - returncode
            terminated = self._terminated(exit_code, podspec.exit_reason(exit_code), "", started_at=self.started_at)
            with contextlib.suppress(ApiError, aiohttp.ClientError, TimeoutError):
                await self._finish(terminated["terminated"])

    async def _finish(self, terminated: Obj) -> None:
        phase = "Succeeded" if terminated["exitCode"] == 0 else "Failed"
        await self._report(state={"terminated": terminated}, phase=phase)
        self._release_address()

    def _release_address(self) -> None:
        if self.holds_address and self.address is not None:
            self.addresses.release(self.address)
            self.holds_address = False

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
            if (not ready and successes >= success_threshold) or (ready and failures >= failure_threshold):
                ready = not ready
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
                async with self.probe_session.get(
                    url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), ssl=False
                ) as response:
                    return 200 <= response.status < 400
            except (aiohttp.ClientError, TimeoutError):
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
            except (OSError, TimeoutError):
                return False
            writer.close()
            return True
        log.warning("%s: only httpGet and tcpSocket probes are supported; assuming ready", self.key)
        return True

    # -- configuration

    async def _get(self, kind: str, name: str, *, optional: bool) -> Obj | None:
        resource = {"Secret": "secrets", "ConfigMap": "configmaps"}[kind]
        try:
            return await self.api.call("GET", f"/api/v1/namespaces/{self.namespace}/{resource}/{name}")
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
                for key, data in self._values(kind, obj).items():
                    variables[source.get("prefix", "") + key] = data.decode(errors="replace")
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
        conditions += [c for c in self.pod.get("status", {}).get("conditions") or [] if c["type"] not in OUR_CONDITIONS]
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
            await self.api.call_retrying(
                "PATCH",
                f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status",
                body={"status": status},
                patch="merge-patch",
            )
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            # The Pod runs on; the next report carries the whole status again.
            log.warning("%s: status update failed: %s", self.key, error)
            return
        self.last_status = status
