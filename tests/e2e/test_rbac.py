"""The operator's effective permissions, as the API server reports them, are what its code calls.

`kubectl auth can-i --list` for the operator's ServiceAccount, with the rules of
manifests/rbac/ (cluster-wide) or manifests/namespaced/ (Roles in the watched namespaces)
bound to it, minus what every ServiceAccount may do anyway, is compared with the
permissions the code declares: each method of scheduledbot.adapters.kube (`@needs`) and
kopf's watches (runtime/handlers.py). A rule the code does not use, or a call without its
rule, fails here; so does any create on admission configurations or a Secret read beyond
the watched namespaces. The other variants (NetworkPolicies, cert-manager) pass the API
server's own validation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduledbot.adapters.kube import PERMISSIONS, Permission
from scheduledbot.runtime.handlers import WATCHES

from .test_install import find, render

pytestmark = pytest.mark.cluster

Grant = tuple[str, str, str, str | None]
_ROW = re.compile(r"^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")


def code_calls(config_name: str, *, home: bool = True) -> set[Grant]:
    """What the code calls; with `home`, also what it calls in its own namespace only (the Lease)."""
    named = {
        "validatingwebhookconfigurations": config_name,
        "leases": "scheduledbot-operator",
        "secrets": "scheduledbot-operator-webhook-ca",
    }

    def grant(p: Permission) -> Grant:
        return (p.group, p.resource, p.verb, named[p.resource] if p.named else None)

    return {grant(p) for p in PERMISSIONS | WATCHES if (home or not p.home) and not p.tenant}


def can_i(cluster: Any, user: str, namespace: str) -> set[Grant]:
    """`kubectl auth can-i --list` as (apiGroup, resource[/subresource], verb, resourceName or None)."""
    out = cluster.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace).stdout
    grants: set[Grant] = set()
    for line in out.splitlines()[1:]:
        row = _ROW.match(line)
        assert row, f"unexpected line of auth can-i: {line!r}"
        resource, _urls, names, verbs = row.groups()
        if not resource:
            continue  # non-resource URLs (/healthz, /version...): every ServiceAccount's
        plural, _, rest = resource.partition(".")
        group, _, sub = rest.partition("/")
        if "/" in plural:
            plural, sub = plural.split("/", 1)
        full = f"{plural}/{sub}" if sub else plural
        for verb in verbs.split():
            for name in names.split() or [None]:
                grants.add((group, full, verb, name))
    return grants


@pytest.fixture
def installed(cluster: Any, namespace: str, crd: None, tmp_path: Path) -> Iterator[dict[str, str]]:
    """manifests/rbac/ bound to a ServiceAccount of the test's namespace (cluster-wide objects renamed),
    which stands for the operator's namespace (the Lease's Role is there)."""
    objects = render(cluster, tmp_path, namespace, "rbac")
    account, role, binding = (find(objects, k) for k in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding"))
    lease_role, lease_binding = find(objects, "Role"), find(objects, "RoleBinding")
    own = f"scheduledbot-operator-{namespace}"
    role["metadata"]["name"] = binding["metadata"]["name"] = binding["roleRef"]["name"] = own
    try:
        cluster.apply(account, role, binding, lease_role, lease_binding)
        yield {"user": f"system:serviceaccount:{namespace}:{account['metadata']['name']}", "namespace": namespace}
    finally:
        cluster.kubectl("delete", "clusterrolebinding,clusterrole", own, "--ignore-not-found", check=False)


def baseline(cluster: Any, namespace: str) -> set[Grant]:
    """What a ServiceAccount with no binding of ours may do (self reviews, discovery)."""
    return can_i(cluster, f"system:serviceaccount:{namespace}:default", namespace)


def test_the_cluster_wide_install_grants_exactly_what_the_code_calls(cluster: Any, installed: dict[str, str]) -> None:
    namespace = installed["namespace"]
    granted = can_i(cluster, installed["user"], namespace) - baseline(cluster, namespace)
    assert granted == code_calls("scheduledbot-operator")
    # The same everywhere (a cluster-wide install), but the Lease: in the operator's namespace only.
    elsewhere = can_i(cluster, installed["user"], "default") - baseline(cluster, namespace)
    assert elsewhere == code_calls("scheduledbot-operator", home=False)


def test_the_operator_can_create_no_admission_configuration_and_read_no_secret(
    cluster: Any, installed: dict[str, str]
) -> None:
    granted = can_i(cluster, installed["user"], installed["namespace"])
    admission = {g for g in granted if g[0] == "admissionregistration.k8s.io"}
    assert admission == {
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "patch", "scheduledbot-operator")
    }
    # Create only: bot tokens are derived from the operator's key, never read back. The one
    # Secret read is the replicas' shared webhook CA, by name, in the operator's own namespace;
    # a Secret a tenant's spec names is readable only where its owner grants it.
    secrets = {(verb, name) for group, resource, verb, name in granted if resource == "secrets"}
    assert secrets == {("create", None), ("get", "scheduledbot-operator-webhook-ca")}
    elsewhere = can_i(cluster, installed["user"], "default")
    assert {(verb, name) for group, resource, verb, name in elsewhere if resource == "secrets"} == {("create", None)}
    for verb in ("create", "update", "delete"):
        for resource in (
            "validatingwebhookconfigurations",
            "mutatingwebhookconfigurations",
            "validatingadmissionpolicies",
        ):
            answer = cluster.kubectl("auth", "can-i", verb, resource, f"--as={installed['user']}", check=False)
            assert answer.stdout.strip() == "no", (verb, resource)
    for verb in ("get", "list", "watch"):
        answer = cluster.kubectl("auth", "can-i", verb, "secrets", "-A", f"--as={installed['user']}", check=False)
        assert answer.stdout.strip() == "no", verb


@pytest.fixture
def namespaced(cluster: Any, namespace: str, crd: None, tmp_path: Path) -> Iterator[dict[str, str]]:
    """manifests/namespaced/'s Roles, watching the test's namespace, for a ServiceAccount of it."""
    rendered = [
        d
        for d in yaml.safe_load_all(
            cluster.kubectl("kustomize", str(Path(__file__).resolve().parents[2] / "manifests" / "namespaced")).stdout
        )
        if d
    ]
    # The watched namespace's Role, and the Lease's (here the watched namespace is the operator's own).
    [role, lease_role] = sorted(
        (o for o in rendered if o["kind"] == "Role"), key=lambda o: "own-namespace" in o["metadata"]["name"]
    )
    [role_binding, lease_binding] = sorted(
        (o for o in rendered if o["kind"] == "RoleBinding"), key=lambda o: "own-namespace" in o["metadata"]["name"]
    )
    cluster_role = find(rendered, "ClusterRole")
    cluster_binding = find(rendered, "ClusterRoleBinding")
    assert not [o for o in rendered if o["kind"] == "ClusterRole" and o is not cluster_role], "one ClusterRole only"
    own = f"scheduledbot-operator-cluster-{namespace}"
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "scheduledbot-operator", "namespace": namespace},
    }
    subject = {"kind": "ServiceAccount", "name": "scheduledbot-operator", "namespace": namespace}
    for obj in (role, role_binding, lease_role, lease_binding):
        obj["metadata"]["namespace"] = namespace
    role_binding["subjects"] = lease_binding["subjects"] = cluster_binding["subjects"] = [subject]
    cluster_role["metadata"]["name"] = cluster_binding["metadata"]["name"] = cluster_binding["roleRef"]["name"] = own
    items = [account, role, role_binding, lease_role, lease_binding, cluster_role, cluster_binding]
    try:
        cluster.apply(*items)
        yield {"user": f"system:serviceaccount:{namespace}:scheduledbot-operator", "namespace": namespace}
    finally:
        cluster.kubectl("delete", "clusterrolebinding,clusterrole", own, "--ignore-not-found", check=False)


def test_the_namespaced_install_grants_what_the_code_calls_in_the_watched_namespace_only(
    cluster: Any, namespaced: dict[str, str]
) -> None:
    namespace = namespaced["namespace"]
    everyone = baseline(cluster, namespace)
    inside = can_i(cluster, namespaced["user"], namespace) - everyone
    outside = can_i(cluster, namespaced["user"], "default") - everyone
    assert inside == code_calls("scheduledbot-operator")
    assert outside == {
        ("meetingbots.dev", "botclasses", "get", None),
        ("meetingbots.dev", "botclasses", "list", None),
        ("meetingbots.dev", "botclasses", "watch", None),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "patch", "scheduledbot-operator"),
    }
    answer = cluster.kubectl(
        "auth", "can-i", "get", "secrets", "-n", "default", f"--as={namespaced['user']}", check=False
    )
    assert answer.stdout.strip() == "no", "no Secret read outside the watched namespaces"


def test_the_namespaced_and_network_policy_variants_pass_the_api_servers_validation(
    cluster: Any, namespace: str, crd: None, tmp_path: Path
) -> None:
    root = Path(__file__).resolve().parents[2] / "manifests"
    documents = []
    for variant in ("namespaced", "networkpolicy", "networkpolicy/bots"):
        rendered = [d for d in yaml.safe_load_all(cluster.kubectl("kustomize", str(root / variant)).stdout) if d]
        documents += rendered
    # Namespaced objects land in the test's namespace, whatever the files say: the check is the schema.
    for obj in documents:
        if obj["kind"] in (
            "Role",
            "RoleBinding",
            "ServiceAccount",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ):
            obj["metadata"]["namespace"] = namespace
    documents = [d for d in documents if d["kind"] != "Namespace"]
    result = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(documents)
    )
    applied = result.stdout.splitlines()
    assert len(applied) == len(documents) and all(line.endswith("(server dry run)") for line in applied), result.stdout
    kinds = {d["kind"] for d in documents}
    assert {"Role", "RoleBinding", "ClusterRole", "NetworkPolicy", "ValidatingWebhookConfiguration"} <= kinds
