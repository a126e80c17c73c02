"""What tests need from the local cluster: kubectl, an API client, bounded waits.

The pytest fixtures in tests/conftest.py hand out a `Cluster`. Waits use
watches with a server-side timeout, so that no test can hang and none sleeps
longer than the cluster takes.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes

from localcluster.cluster import DEFAULT_LAYOUT, Layout

Obj = dict[str, Any]


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries kubectl's own stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


class Cluster:
    def __init__(self, layout: Layout = DEFAULT_LAYOUT) -> None:
        self.layout = layout
        self.kubeconfig = layout.kubeconfig

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster, as a user would."""
        command = ["kubectl", *args]
        result = subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, result.stdout, result.stderr)
        return result

    @functools.cached_property
    def api(self) -> kubernetes.client.ApiClient:
        """A synchronous client for reads and waits (kubectl is slow to poll)."""
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    def pod_dir(self, namespace: str, name: str) -> Path:
        """The fake kubelet's directory of a Pod (its cwd, log, volumes, pid)."""
        return self.layout.pods / f"{namespace}_{name}"

    def get_pod(self, namespace: str, name: str) -> Obj:
        response = kubernetes.client.CoreV1Api(self.api).read_namespaced_pod(
            name, namespace, _preload_content=False
        )
        pod: Obj = json.loads(response.data)
        return pod

    def wait_for_pod(
        self,
        namespace: str,
        name: str,
        condition: Callable[[Obj], bool],
        *,
        what: str,
        timeout: int = 60,
    ) -> Obj:
        """The Pod once `condition` holds for it; fails after `timeout` seconds."""
        core = kubernetes.client.CoreV1Api(self.api)
        return self._wait(core.list_namespaced_pod, namespace, name, condition, what, timeout)

    def wait_for_service_account(self, namespace: str, name: str = "default", *, timeout: int = 30) -> None:
        core = kubernetes.client.CoreV1Api(self.api)
        self._wait(core.list_namespaced_service_account, namespace, name, bool, "created", timeout)

    def _wait(
        self,
        list_function: Callable[..., Any],
        namespace: str,
        name: str,
        condition: Callable[[Obj], bool],
        what: str,
        timeout: int,
    ) -> Obj:
        last: Obj | None = None
        watch = kubernetes.watch.Watch()
        # Without a resourceVersion the watch starts with the current object.
        for event in watch.stream(
            list_function,
            namespace,
            field_selector=f"metadata.name={name}",
            timeout_seconds=timeout,
            _request_timeout=timeout + 10,
        ):
            last = event["raw_object"]
            if event["type"] != "DELETED" and condition(last):
                watch.stop()
                return last
        raise AssertionError(
            f"{namespace}/{name}: not {what} within {timeout} s; last seen status:\n"
            + json.dumps((last or {}).get("status"), indent=2)
        )

    def wait_for_pod_deleted(self, namespace: str, name: str, *, timeout: int = 60) -> None:
        watch = kubernetes.watch.Watch()
        core = kubernetes.client.CoreV1Api(self.api)
        pods = core.list_namespaced_pod(namespace, field_selector=f"metadata.name={name}")
        if not pods.items:
            return
        for event in watch.stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=pods.metadata.resource_version,
            timeout_seconds=timeout,
            _request_timeout=timeout + 10,
        ):
            if event["type"] == "DELETED":
                watch.stop()
                return
        raise AssertionError(f"pod {namespace}/{name} still exists after {timeout} s")

    def diagnostics(self, namespace: str) -> str:
        """What a developer wants to see when a test in `namespace` failed."""
        parts = [self.kubectl("get", "all,events", "-n", namespace, "-o", "wide", check=False).stdout]
        for pod_dir in sorted(self.layout.pods.glob(f"{namespace}_*")):
            for log in sorted(pod_dir.glob("*.log")):
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                parts.append(f"--- {log.relative_to(self.layout.root)} (last 30 lines)\n{tail}")
        return "\n".join(parts)
