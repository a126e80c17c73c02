"""The operator's own identity, so that the API server can count its requests and nobody else's.

Why
===
`apiserver_request_total` has no namespace and no user label: on a cluster that other
test sessions use at the same time, the writes of their operators land in the same
counters. So the bench's operator runs as a ServiceAccount of the bench namespace
(bound to cluster-admin: the bench measures costs, not RBAC), and API Priority and
Fairness FlowSchemas that match only that ServiceAccount classify its requests:
`apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}` then counts, on the
API server's side, exactly this operator's requests of each kind. The FlowSchemas send
them to the `workload-low` priority level, where the built-in `service-accounts`
FlowSchema would send them anyway, so the classification changes no behaviour.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from bench.kube import GROUP, Kube

log = logging.getLogger("bench")

SERVICE_ACCOUNT = "bench-operator"
FLOWCONTROL = "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas"
#: Category -> resource rules. First match wins (by matchingPrecedence): the catch-all comes last.
CATEGORIES: dict[str, tuple[int, list[dict[str, Any]]]] = {
    "status": (50, [{"verbs": ["patch", "update"], "apiGroups": [GROUP], "resources": ["scheduledbots/status"]}]),
    "bot-writes": (
        50,
        [{"verbs": ["patch", "update", "create", "delete"], "apiGroups": [GROUP], "resources": ["scheduledbots"]}],
    ),
    "events": (
        50,
        [{"verbs": ["create", "patch", "update"], "apiGroups": ["", "events.k8s.io"], "resources": ["events"]}],
    ),
    "pod-create": (50, [{"verbs": ["create"], "apiGroups": [""], "resources": ["pods"]}]),
    "pod-delete": (50, [{"verbs": ["delete", "deletecollection"], "apiGroups": [""], "resources": ["pods"]}]),
    "secret-writes": (
        50,
        [{"verbs": ["create", "delete", "patch", "update"], "apiGroups": [""], "resources": ["secrets"]}],
    ),
    "reads": (60, [{"verbs": ["get", "list", "watch"], "apiGroups": ["*"], "resources": ["*"]}]),
    "rest": (70, [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]),
}


class OperatorIdentity:
    def __init__(self, kube: Kube, *, namespace: str, run_id: str, admin_kubeconfig: Path, path: Path) -> None:
        self.kube = kube
        self.namespace = namespace
        self.run_id = run_id
        self.admin_kubeconfig = admin_kubeconfig
        self.path = path
        self.binding = f"bench-{run_id}-operator"

    def schema(self, category: str) -> str:
        return f"bench-{self.run_id}-{category}"

    async def create(self) -> Path:
        """ServiceAccount, binding, token, FlowSchemas; returns the operator's kubeconfig."""
        ns = self.namespace
        await self.kube.call(
            "POST",
            f"/api/v1/namespaces/{ns}/serviceaccounts",
            body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT}},
        )
        await self.kube.call(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            body={
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": self.binding, "labels": {"app.kubernetes.io/part-of": "scheduledbot-bench"}},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": ns}],
            },
        )
        token = (
            await self.kube.call(
                "POST",
                f"/api/v1/namespaces/{ns}/serviceaccounts/{SERVICE_ACCOUNT}/token",
                body={
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {"expirationSeconds": 86400},
                },
            )
        )["status"]["token"]
        for category, (precedence, rules) in CATEGORIES.items():
            await self.kube.call(
                "POST",
                FLOWCONTROL,
                body={
                    "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
                    "kind": "FlowSchema",
                    "metadata": {
                        "name": self.schema(category),
                        "labels": {"app.kubernetes.io/part-of": "scheduledbot-bench"},
                    },
                    "spec": {
                        "matchingPrecedence": precedence,
                        "priorityLevelConfiguration": {"name": "workload-low"},
                        "distinguisherMethod": {"type": "ByUser"},
                        "rules": [
                            {
                                "subjects": [
                                    {
                                        "kind": "ServiceAccount",
                                        "serviceAccount": {"name": SERVICE_ACCOUNT, "namespace": ns},
                                    }
                                ],
                                "resourceRules": [
                                    {**rule, "namespaces": ["*"], "clusterScope": True} for rule in rules
                                ],
                                **(
                                    {"nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}
                                    if category == "rest"
                                    else {}
                                ),
                            }
                        ],
                    },
                },
            )
        admin = yaml.safe_load(self.admin_kubeconfig.read_text())
        cluster = admin["clusters"][0]["cluster"]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
            "contexts": [{"name": "bench", "context": {"cluster": "local", "user": SERVICE_ACCOUNT, "namespace": ns}}],
            "current-context": "bench",
        }
        self.path.write_text(yaml.safe_dump(config))
        self.path.chmod(0o600)
        return self.path

    async def counts(self) -> Counter[str]:
        """Requests the API server dispatched for this operator, by category."""
        counts: Counter[str] = Counter()
        prefix = f'apiserver_flowcontrol_dispatched_requests_total{{flow_schema="bench-{self.run_id}-'
        for line in (await self.kube.raw("/metrics", timeout=60)).splitlines():
            if line.startswith(prefix):
                category = line[len(prefix) :].split('"', 1)[0]
                counts[category] += int(float(line.rsplit(" ", 1)[1]))
        return counts

    async def delete(self) -> None:
        for category in CATEGORIES:
            await _delete(self.kube, f"{FLOWCONTROL}/{self.schema(category)}")
        await _delete(self.kube, f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{self.binding}")


async def _delete(kube: Kube, path: str) -> None:
    try:
        await kube.call("DELETE", path)
    except Exception as error:  # already gone
        log.debug("delete %s: %r", path, error)
