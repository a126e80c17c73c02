"""manifests/ on the local control plane: every object passes the API server's own
validation, the operator's Pod is admitted under the restricted Pod Security Standard,
the operator runs a bot's whole lifecycle with nothing but manifests/rbac/, and the
Flux health expressions of docs/gitops.md say what that page says.

The manifests are rendered as users render them, with kubectl's built-in kustomize,
through an overlay that only moves them into the test's namespace (so that namespaced
objects have a namespace to go to, and tests stay independent).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.bots import Bots, soon
from localcluster.operator import OperatorProcess, default_webhook_config
from localcluster.testing import Cluster, one_version_crd
from localcluster.waiting import until
from scheduledbot.api.models import BotState
from scheduledbot.core.model import FINALIZER
from scheduledbot.runtime.webhook_ca import secret_name as ca_secret_name

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]


def render(cluster: Cluster, workdir: Path, namespace: str, *directories: str) -> list[Obj]:
    """`kubectl kustomize` of manifests/<directories>, moved into `namespace`."""
    overlay = workdir / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": namespace,
                # kustomize refuses absolute paths to bases.
                "resources": [os.path.relpath(ROOT / "manifests" / d, overlay) for d in directories],
            }
        )
    )
    return [d for d in yaml.safe_load_all(cluster.kubectl("kustomize", str(overlay)).stdout) if d]


def find(objects: list[Obj], kind: str) -> Obj:
    [found] = [o for o in objects if o["kind"] == kind]
    return found


# The Prometheus Operator is not installed here. This stand-in declares the fields of
# its ServiceMonitor that manifests/prometheus/monitor.yaml uses, with their upstream
# types; server-side apply refuses fields a schema does not declare, so a misspelt
# field still fails.
SERVICE_MONITOR_CRD = one_version_crd(
    "monitoring.coreos.com",
    {
        "kind": "ServiceMonitor",
        "listKind": "ServiceMonitorList",
        "plural": "servicemonitors",
        "singular": "servicemonitor",
    },
    {
        "type": "object",
        "required": ["selector"],
        "properties": {
            "selector": {
                "type": "object",
                "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
            },
            "endpoints": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string"},
                        "interval": {"type": "string"},
                    },
                },
            },
        },
    },
)


@contextlib.contextmanager
def service_monitor_kind(cluster: Cluster) -> Iterator[None]:
    name = SERVICE_MONITOR_CRD["metadata"]["name"]
    if cluster.kubectl("get", "crd", name, check=False).returncode == 0:
        yield  # the real one, or someone else's: use it, leave it
        return
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(SERVICE_MONITOR_CRD))
    try:
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{name}")
        yield
    finally:
        cluster.kubectl("delete", "crd", name, "--ignore-not-found", "--wait=false", check=False)


def test_every_manifest_passes_the_api_servers_validation(
    cluster: Cluster, namespace: str, crd: None, tmp_path: Path
) -> None:
    objects = render(cluster, tmp_path, namespace, ".", "prometheus", "samples")
    assert Counter(o["kind"] for o in objects) == Counter(
        {
            "Namespace": 1,
            "CustomResourceDefinition": 3,
            "ServiceAccount": 1,
            "ClusterRole": 1,
            "ClusterRoleBinding": 1,
            # The operator's own-namespace Role, and the calendar sample's grant of its feed Secret.
            "Role": 2,
            "RoleBinding": 2,
            "Deployment": 1,
            "PodDisruptionBudget": 1,
            "Service": 2,
            "ServiceMonitor": 1,
            "ScheduledBot": 3,
            "BotSchedule": 2,
            "Secret": 1,
            "ValidatingWebhookConfiguration": 1,
        }
    )
    # PodSecurity checks a Deployment's Pod template only against the namespace's real labels.
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/warn=restricted")
    with service_monitor_kind(cluster):
        result = cluster.kubectl(
            "apply", "--server-side", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(objects)
        )
    applied = result.stdout.splitlines()
    assert len(applied) == len(objects) and all(line.endswith("(server dry run)") for line in applied), result.stdout
    assert "warning" not in result.stderr.lower(), result.stderr


def test_the_operators_pod_is_admitted_under_the_restricted_pod_security_standard(
    cluster: Cluster, namespace: str, crd: None, tmp_path: Path
) -> None:
    objects = render(cluster, tmp_path, namespace, "rbac", "manager")
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(find(objects, "ServiceAccount")))
    template = find(objects, "Deployment")["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "spec": template["spec"],
        "metadata": {**template["metadata"], "name": "scheduledbot-operator", "namespace": namespace},
    }
    result = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert result.returncode == 0, result.stderr
    # The check is real: the same Pod, allowed to escalate privileges, is refused.
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    result = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert result.returncode != 0 and "violates PodSecurity" in result.stderr, result.stderr


# --- the operator with manifests/rbac/ and nothing more ------------------------------------


@pytest.fixture
def restricted_kubeconfig(cluster: Cluster, namespace: str, crd: None, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig with the token of manifests/rbac/'s ServiceAccount, in the test's namespace,
    and manifests/webhook/'s configuration installed, as `make deploy` installs both.

    The ClusterRole, its binding and the webhook configuration are cluster-wide objects,
    so this test's copies get their own names, the role's webhook rule names this test's
    configuration, and the configuration selects only this namespace and calls the
    operator by URL (`point_webhook`, once its port is known); every rule is otherwise
    the manifest's.
    """
    objects = render(cluster, tmp_path, namespace, "rbac", "webhook")
    account, role, binding = (find(objects, k) for k in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding"))
    configuration = find(objects, "ValidatingWebhookConfiguration")
    # The Lease and webhook CA rules: a Role in the operator's namespace, here the test's;
    # the CA's Secret is named after this test's configuration.
    lease_role, lease_binding = find(objects, "Role"), find(objects, "RoleBinding")
    [ca_rule] = [r for r in lease_role["rules"] if r["resources"] == ["secrets"] and r.get("resourceNames")]
    ca_rule["resourceNames"] = [ca_secret_name(default_webhook_config([namespace]))]
    own = f"scheduledbot-operator-{namespace}"
    webhook_config = default_webhook_config([namespace])  # the name the e2e operator registers
    manifest_rules = json.loads(json.dumps(role["rules"]))
    role["metadata"]["name"] = binding["metadata"]["name"] = binding["roleRef"]["name"] = own
    [named] = [r for r in role["rules"] if r.get("resourceNames")]
    named["resourceNames"] = [webhook_config]
    assert [r for r in role["rules"] if r is not named] == [r for r in manifest_rules if not r.get("resourceNames")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": namespace}
    ]
    configuration["metadata"]["name"] = webhook_config
    for webhook in configuration["webhooks"]:
        webhook["clientConfig"] = {"url": "https://127.0.0.1:1/validate"}
        webhook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    try:
        cluster.apply(account, role, binding, lease_role, lease_binding, configuration)
        token = cluster.kubectl(
            "create", "token", account["metadata"]["name"], "-n", namespace, "--duration", "1h"
        ).stdout.strip()
        admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
        path = tmp_path / "operator.kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": admin["clusters"],
                    "users": [{"name": "scheduledbot-operator", "user": {"token": token}}],
                    "contexts": [
                        {
                            "name": "operator",
                            "context": {"cluster": admin["clusters"][0]["name"], "user": "scheduledbot-operator"},
                        }
                    ],
                    "current-context": "operator",
                }
            )
        )
        yield path
    finally:
        cluster.kubectl("delete", "clusterrolebinding", own, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "clusterrole", own, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "validatingwebhookconfiguration", webhook_config, "--ignore-not-found", check=False)


@pytest.fixture
def restricted_operator(restricted_kubeconfig: Path, make_operator: Callable[..., OperatorProcess]) -> OperatorProcess:
    """The e2e operator, but with the restricted kubeconfig and the installed webhook configuration; not started."""
    return make_operator(kubeconfig=restricted_kubeconfig, args=["--webhook-configuration=patch"], start=False)


def point_webhook(cluster: Cluster, operator: OperatorProcess) -> None:
    """Aim the installed configuration at the operator's port (a Service does this in a cluster)."""
    url = f"https://127.0.0.1:{operator.webhook_port}/validate"
    current = operator.webhook_configuration()
    assert current is not None
    patch = {"webhooks": [{"name": w["name"], "clientConfig": {"url": url}} for w in current["webhooks"]]}
    cluster.kubectl("patch", "validatingwebhookconfiguration", operator.webhook_config, "-p", json.dumps(patch))


def assert_never_denied(operator: OperatorProcess) -> None:
    # Only kopf's own calls log a refusal; the adapters' are proven by their effects.
    denied = [line for line in operator.log().splitlines() if re.search(r"forbidden|\(403\)", line, re.I)]
    assert not denied, "\n".join(denied)


def test_the_operator_runs_a_bot_from_staging_to_the_end_with_only_its_rbac(
    cluster: Cluster, namespace: str, bots: Bots, restricted_operator: OperatorProcess
) -> None:
    operator = restricted_operator
    # As the Deployment runs it: leader of the Lease its Role names (the test's namespace stands
    # for the operator's). A restart (the next test) would wait out the lease: not here.
    operator.args = [*operator.args, "--leader-elect", f"--leader-election-namespace={namespace}"]
    operator.start()
    until(lambda: operator.metrics().get("scheduledbot_leader") == 1, timeout=10, what="leading")
    installed = operator.webhook_configuration()
    assert installed is not None
    assert all(w["clientConfig"].get("caBundle") for w in installed["webhooks"]), "it sets the installed CA"
    point_webhook(cluster, operator)

    bots.apply(bots.manifest("standup", join_at=soon(15), lead=8))
    # Staged at once, then moved beyond its lead: the operator deletes the Pod itself
    # (the garbage collector would not: the bot still exists).
    bots.apply(bots.manifest("moved", join_at=soon(60), lead=58))
    bots.wait_state("moved", "staged", timeout=15)
    bots.apply(bots.manifest("moved", join_at=soon(900), lead=58))
    bots.wait_state("moved", "scheduled", timeout=15)
    cluster.wait_for_pod_deleted(namespace, "moved-bot", timeout=30)

    bots.wait_state("standup", "joined", timeout=40)
    assert [s for s in bots.secrets() if s.startswith("standup-bot-token-")]
    assert FINALIZER in bots.get("standup")["metadata"].get("finalizers", [])
    bots.admin(f"{namespace}-standup", "end")
    bots.wait_state("standup", "ended", timeout=30)
    assert FINALIZER not in (bots.get("standup")["metadata"].get("finalizers") or [])
    assert {"Scheduled", "Staged", "Joined", "Ended"} <= {e["reason"] for e in bots.events("standup")}

    # Refused by the webhook, as the operator's own RBAC allows: the webhook answered.
    past = bots.apply(bots.manifest("past", join_at="2020-01-01T00:00:00Z"), check=False)
    assert past.returncode != 0 and "spec.joinAt cannot be in the past" in past.stderr, past.stderr
    operator.stop()
    assert operator.webhook_configuration() is not None, "the installed configuration stays installed"
    assert_never_denied(operator)


def test_a_restarted_operator_derives_the_same_token_and_replaces_its_webhook_ca_with_only_its_rbac(
    cluster: Cluster, namespace: str, bots: Bots, restricted_operator: OperatorProcess
) -> None:
    operator = restricted_operator
    operator.start()
    before = operator.webhook_configuration()
    assert before is not None
    point_webhook(cluster, operator)
    bots.apply(bots.manifest("standup", join_at=soon(15), lead=10))
    bots.wait_state("standup", "staged", timeout=15)
    operator.kill()  # no cleanup, as after a crash
    operator.start()
    point_webhook(cluster, operator)

    # The join signal and the state reports need the token: derived again from the same key, never read.
    joined = bots.wait_state("standup", "joined", timeout=30)
    print(f"\njoined by {joined.get('joinedBy')} after the restart")
    bots.admin(f"{namespace}-standup", "end")
    bots.wait_state("standup", "ended", timeout=30)
    assert_never_denied(operator)

    after = operator.webhook_configuration()
    assert after is not None
    # The restarted operator serves a new certificate: the configuration must carry its CA.
    assert after["webhooks"][0]["clientConfig"]["caBundle"] != before["webhooks"][0]["clientConfig"]["caBundle"]


# --- the Flux health expressions of docs/gitops.md ----------------------------------------


def flux_expressions() -> Obj:
    """The healthCheckExprs entry of the Kustomization shown in docs/gitops.md."""
    text = (ROOT / "docs" / "gitops.md").read_text()
    [kustomization] = [
        doc
        for block in re.findall(r"```yaml\n(.*?)```", text, re.S)
        if (doc := yaml.safe_load(block)).get("kind") == "Kustomization"
    ]
    check: Obj
    [check] = kustomization["spec"]["healthCheckExprs"]
    assert (check["apiVersion"], check["kind"]) == ("meetingbots.dev/v1alpha1", "ScheduledBot")
    return check


def flux_status_expression(check: Obj) -> str:
    """Flux's evaluation (RFC 0009) as one CEL expression on an admission `object`.

    Flux binds the object's top-level fields (status, metadata) as variables; an
    admission policy binds the object as `object`.
    """

    def bound(expression: str) -> str:
        return re.sub(r"(?<![\w.?])(status|metadata)\b", r"object.\1", expression)

    return (
        "has(object.status.observedGeneration) && object.status.observedGeneration != object.metadata.generation"
        " ? 'InProgress'"
        f" : ({bound(check['inProgress'])}) ? 'InProgress'"
        f" : ({bound(check['failed'])}) ? 'Failed'"
        f" : ({bound(check['current'])}) ? 'Current'"
        " : 'InProgress'"
    )


FLUX_EXPECTED = {
    "scheduled": "Current",
    "staged": "Current",
    "joining": "InProgress",
    "waiting_room": "Current",
    "joined": "Current",
    "recording": "Current",
    "leaving": "InProgress",
    "ended": "Current",
    "failed": "Failed",
}


def bot_status(state: str, *, observed: int = 1) -> Obj:
    failed = state == "failed"
    reason = "NotReadyInTime" if failed else "Scheduled"

    def condition(kind: str, true: bool) -> Obj:
        return {
            "type": kind,
            "status": "True" if true else "False",
            "reason": reason,
            "message": "m",
            "lastTransitionTime": "2030-06-16T16:00:00Z",
            "observedGeneration": observed,
        }

    return {
        "state": state,
        "reason": reason,
        "message": "m",
        "observedGeneration": observed,
        "conditions": [condition("Ready", not failed), condition("Reconciling", False), condition("Stalled", failed)],
    }


def test_the_flux_expressions_of_the_docs_classify_every_state_as_documented(
    cluster: Cluster, namespace: str, crd: None
) -> None:
    assert set(FLUX_EXPECTED) == {s.value for s in BotState}
    # A policy that refuses every status write of this namespace's bots, saying what
    # Flux would conclude about the object as written; dry-run writes ask it.
    name = f"flux-health-{namespace}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["meetingbots.dev"],
                        "apiVersions": ["v1alpha1"],
                        "operations": ["UPDATE"],
                        "resources": ["scheduledbots/status"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "false",
                    "message": "no verdict",
                    "messageExpression": "'flux: ' + (" + flux_status_expression(flux_expressions()) + ")",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "manifests" / "samples" / "zoom.yaml"))

    def verdict(status: Obj) -> str:
        result = cluster.kubectl(
            "patch",
            "scheduledbot",
            "zoom-standup",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "--dry-run=server",
            "-p",
            json.dumps({"status": status}),
            check=False,
        )
        found = re.search(r"flux: (\w+)", result.stderr)
        return found[1] if found else f"(no verdict) {result.stderr.strip()}"

    try:
        cluster.apply(policy, binding)
        # Policies take effect a moment after they are written.
        until(
            lambda: not verdict(bot_status("scheduled")).startswith("(no verdict)"),
            timeout=30,
            interval=0.2,
            what="the policy in effect",
        )
        assert {state: verdict(bot_status(state)) for state in FLUX_EXPECTED} == FLUX_EXPECTED
        assert verdict({}) == "InProgress", "a status without a state or conditions"
        assert verdict(bot_status("scheduled", observed=0)) == "InProgress", "a spec the operator has not seen"
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found", check=False)
