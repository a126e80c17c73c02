"""The control plane itself: version, CRDs with server-side validation, garbage collection."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from localcluster.kubectl import KubectlError
from localcluster.testing import Cluster, one_version_crd

pytestmark = pytest.mark.cluster

CRD = one_version_crd(
    "localcluster.test",
    {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
    {"type": "object", "required": ["size"], "properties": {"size": {"type": "integer", "minimum": 1}}},
)
CRD_NAME: str = CRD["metadata"]["name"]


def gadget(name: str, namespace: str, size: int) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "localcluster.test/v1",
            "kind": "Gadget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"size": size},
        }
    )


@pytest.fixture
def crd(cluster: Cluster) -> Iterator[str]:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(CRD))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=30s", timeout=40)
    yield CRD_NAME
    cluster.kubectl("delete", "crd", CRD_NAME, "--wait=false", check=False)


def test_the_apiserver_reports_the_pinned_version(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)

    assert version["gitVersion"] == "v1.34.4"


def test_a_crd_installs_and_the_server_enforces_its_schema(cluster: Cluster, namespace: str, crd: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=gadget("good", namespace, 3))

    with pytest.raises(KubectlError) as rejected:
        cluster.kubectl("apply", "-f", "-", input=gadget("bad", namespace, 0))

    assert (
        'The Gadget "bad" is invalid: spec.size: Invalid value: 0: '
        "spec.size in body should be greater than or equal to 1"
    ) in rejected.value.stderr
    names = cluster.kubectl("get", "gadgets", "-n", namespace, "-o", "name").stdout.split()
    assert names == ["gadget.localcluster.test/good"]


def test_deleting_the_owner_garbage_collects_the_pod_it_owns(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner_uid = cluster.kubectl("get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "owned",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}],
        },
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "600"]}]},
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))
    cluster.wait_for_pod(namespace, "owned", lambda p: p["status"].get("phase") == "Running", what="Running")

    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)

    cluster.wait_for_pod_deleted(namespace, "owned")
