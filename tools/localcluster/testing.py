"""What tests need from the local cluster: kubectl, bounded waits, diagnostics.

The pytest fixtures in tests/conftest.py hand out a `Cluster`. Waits list the
object, then watch it with a server-side timeout: no test can hang, none polls,
and none waits longer than the cluster takes.
"""

from __future__ import annotations

import functools
import json
import ssl
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.client import HTTPResponse
from pathlib import Path

from localcluster.cluster import DEFAULT_LAYOUT, Layout
from localcluster.kubeapi import load_kubeconfig
from localcluster.kubectl import kubectl
from localcluster.pki import WEBHOOK_CLIENT_NAME
from localcluster.podspec import Obj


class Cluster:
    def __init__(self, layout: Layout = DEFAULT_LAYOUT) -> None:
        self.layout = layout
        self.kubeconfig = layout.kubeconfig

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster, as a user would."""
        return kubectl(*args, kubeconfig=self.kubeconfig, input=input, check=check, timeout=timeout)

    def apply(self, *objects: Obj) -> subprocess.CompletedProcess[str]:
        """`kubectl apply` of `objects` in one List, as a user applies one file."""
        return self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        )

    def operator_environment(self) -> dict[str, str]:
        """How an operator started by a test authenticates this cluster's apiserver as its webhook caller."""
        return {
            "SCHEDULEDBOT_WEBHOOK_CLIENT_CA_FILE": str(self.layout.pki.ca_cert),
            "SCHEDULEDBOT_WEBHOOK_CLIENT_NAMES": WEBHOOK_CLIENT_NAME,
        }

    def pod_dir(self, namespace: str, name: str) -> Path:
        """The fake kubelet's directory of a Pod (its cwd, log, volumes, pid)."""
        return self.layout.pods / f"{namespace}_{name}"

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
        pod = self._wait(
            f"/api/v1/namespaces/{namespace}/pods",
            name,
            lambda obj: obj is not None and condition(obj),
            what=what,
            timeout=timeout,
        )
        assert pod is not None
        return pod

    def wait_for_pod_deleted(self, namespace: str, name: str, *, timeout: int = 60) -> None:
        path = f"/api/v1/namespaces/{namespace}/pods"
        self._wait(path, name, lambda obj: obj is None, what="deleted", timeout=timeout)

    def wait_for_service_account(self, namespace: str, name: str = "default", *, timeout: int = 30) -> None:
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts"
        self._wait(path, name, lambda obj: obj is not None, what="created", timeout=timeout)

    def diagnostics(self, namespace: str) -> str:
        """What a developer wants to see when a test in `namespace` failed."""
        parts = [self.kubectl("get", "all,events", "-n", namespace, "-o", "wide", check=False).stdout]
        for pod_dir in sorted(self.layout.pods.glob(f"{namespace}_*")):
            for log in sorted(pod_dir.glob("*.log")):
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                parts.append(f"--- {log.relative_to(self.layout.root)} (last 30 lines)\n{tail}")
        return "\n".join(parts)

    @functools.cached_property
    def _endpoint(self) -> tuple[str, ssl.SSLContext]:
        return load_kubeconfig(self.kubeconfig)

    def _open(self, path: str, params: dict[str, str], *, timeout: float) -> HTTPResponse:
        server, context = self._endpoint
        url = f"{server}{path}?{urllib.parse.urlencode(params)}"
        response: HTTPResponse = urllib.request.urlopen(url, context=context, timeout=timeout)
        return response

    def _wait(
        self,
        collection: str,
        name: str,
        condition: Callable[[Obj | None], bool],
        *,
        what: str,
        timeout: int,
    ) -> Obj | None:
        """List, then watch, one object until `condition` holds (None: the object is absent)."""
        selector = {"fieldSelector": f"metadata.name={name}"}
        with self._open(collection, selector, timeout=30) as response:
            listing = json.load(response)
        current: Obj | None = listing["items"][0] if listing["items"] else None
        if condition(current):
            return current
        watch = {
            **selector,
            "watch": "1",
            "resourceVersion": listing["metadata"]["resourceVersion"],
            # The server ends the watch at the deadline; the socket timeout
            # only guards against a server that stopped answering.
            "timeoutSeconds": str(timeout),
        }
        with self._open(collection, watch, timeout=timeout + 10) as response:
            for line in response:
                event = json.loads(line)
                if event["type"] == "ERROR":
                    break
                current = None if event["type"] == "DELETED" else event["object"]
                if condition(current):
                    return current
        raise AssertionError(
            f"{collection}/{name}: not {what} within {timeout} s; last seen status:\n"
            + json.dumps((current or {}).get("status"), indent=2)
        )


def one_version_crd(group: str, names: dict[str, str], spec: Obj) -> Obj:
    """A namespaced CustomResourceDefinition, served and stored as v1, whose objects' `spec` has schema `spec`."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{names['plural']}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": names,
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}},
                }
            ],
        },
    }
