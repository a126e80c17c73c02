"""manifests/ without a cluster: it parses, it grants exactly what the operator uses, its
Deployment is restricted and agrees with the operator's flags, its CRDs are crds/'s, its
webhook configuration is the operator's own, and its network policies select what they mean.

tests/e2e/test_install.py and tests/e2e/test_rbac.py apply the same files to the local
control plane.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduledbot.adapters.kube import NEEDED_BY, PERMISSIONS, Kube, Permission
from scheduledbot.api.crd import KINDS
from scheduledbot.api.models import parse_spec
from scheduledbot.api.platforms import Platform
from scheduledbot.api.schedule import SourceKind, parse_schedule_spec
from scheduledbot.core.children import LABEL
from scheduledbot.protocol import CONTROL_PORT_NAME
from scheduledbot.runtime import config, webhook_ca
from scheduledbot.runtime.handlers import WATCHES
from scheduledbot.runtime.schedule_feeds import FEED_SECRET_LABEL
from scheduledbot.runtime.webhook import build_configuration

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"

Obj = dict[str, Any]


def load(relative: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all((MANIFESTS / relative).read_text()) if d is not None]


def one(relative: str, kind: str) -> Obj:
    [found] = [d for d in load(relative) if d["kind"] == kind]
    return found


def kustomized(directory: Path) -> list[Path]:
    """The files a kustomization lists, following its sub-directories."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    files: list[Path] = []
    for entry in kustomization["resources"]:
        path = directory / entry
        files += kustomized(path) if path.is_dir() else [path]
    return files


def test_every_manifest_parses_and_names_what_it_is() -> None:
    files = sorted(MANIFESTS.rglob("*.yaml"))
    assert len(files) > 10
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc, f"{path}: empty document"
            assert {"apiVersion", "kind"} <= doc.keys(), path
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], path


def test_every_kustomization_lists_files_that_exist_and_every_file_is_listed() -> None:
    listed = {p.resolve() for k in MANIFESTS.rglob("kustomization.yaml") for p in kustomized(k.parent)}
    assert all(p.exists() for p in listed)
    # argocd/ is a patch of Argo CD's own ConfigMap, applied to Argo CD's installation.
    unlisted = {
        p.resolve() for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml" and p.parent.name != "argocd"
    } - listed
    assert not unlisted


def test_the_default_kustomization_installs_the_operator_and_nothing_that_needs_other_crds() -> None:
    files = kustomized(MANIFESTS)
    kinds = sorted(d["kind"] for f in files for d in yaml.safe_load_all(f.read_text()))
    assert kinds == sorted(
        [
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Namespace",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "ValidatingWebhookConfiguration",
        ]
    )
    assert yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["namespace"] == "scheduledbot-system"
    assert one("manager/manager.yaml", "Namespace")["metadata"]["name"] == "scheduledbot-system"


def test_the_kustomize_crds_are_copies_of_crds() -> None:
    copies = sorted(p.name for p in (MANIFESTS / "crd").glob("*.yaml") if p.name != "kustomization.yaml")
    assert copies == sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    for name in copies:
        assert (MANIFESTS / "crd" / name).read_text() == (ROOT / "crds" / name).read_text(), (
            "manifests/crd/ must hold the CRDs of crds/: run `make crds`"
        )


def test_crds_holds_exactly_the_generated_kinds() -> None:
    assert sorted(p.name for p in (ROOT / "crds").glob("*.yaml")) == sorted(kind.file_name for kind in KINDS)


# --- RBAC --------------------------------------------------------------------------------

Grant = tuple[str, str, str, str | None]
WEBHOOK_CONFIG = "scheduledbot-operator"
LEASE = "scheduledbot-operator"
WEBHOOK_CA = "scheduledbot-operator-webhook-ca"
#: The object a `named` permission is limited to, by resource: the one its flag names by default.
NAMED = {"validatingwebhookconfigurations": WEBHOOK_CONFIG, "leases": LEASE, "secrets": WEBHOOK_CA}


def calls(permissions: set[Permission] | frozenset[Permission]) -> set[Grant]:
    """(apiGroup, resource, verb, resourceName or None), as RBAC rules read."""
    return {(p.group, p.resource, p.verb, NAMED[p.resource] if p.named else None) for p in permissions}


#: Every call of adapters/kube.py and every kopf watch, as the code declares them; the
#: ClusterRole grants those not limited to the operator's own namespace, a Role there the rest.
OPERATOR_CALLS = calls({p for p in PERMISSIONS | WATCHES if not p.home and not p.tenant})
HOME_CALLS = calls({p for p in PERMISSIONS if p.home})
CLUSTER_SCOPED = {"botclasses", "validatingwebhookconfigurations"}


def granted(role: Obj) -> set[Grant]:
    return {
        (group, resource, verb, name)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or [None]
    }


def test_every_method_that_talks_to_the_api_declares_its_permissions() -> None:
    methods = {
        name
        for name, member in vars(Kube).items()
        if callable(member) and not name.startswith("_") and name not in ("connect", "close")
    }
    assert methods == set(NEEDED_BY)


def test_the_cluster_role_grants_exactly_what_the_operator_calls() -> None:
    role = one("rbac/role.yaml", "ClusterRole")
    assert granted(role) == OPERATOR_CALLS
    assert not any("*" in rule[key] for rule in role["rules"] for key in ("apiGroups", "resources", "verbs"))


def test_the_own_namespace_role_grants_the_lease_and_webhook_ca_calls_there_only() -> None:
    role = one("rbac/own_namespace_role.yaml", "Role")
    binding = one("rbac/own_namespace_role.yaml", "RoleBinding")
    assert {
        ("coordination.k8s.io", "leases", "get", LEASE),
        ("coordination.k8s.io", "leases", "update", LEASE),
        ("coordination.k8s.io", "leases", "create", None),
        ("", "secrets", "get", WEBHOOK_CA),
        ("", "secrets", "create", None),
    } == HOME_CALLS
    assert granted(role) == HOME_CALLS
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == deployment()["metadata"]["namespace"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = one("rbac/service_account.yaml", "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    assert not [r for r in one("rbac/role.yaml", "ClusterRole")["rules"] if "leases" in r["resources"]]


def test_no_rule_creates_or_edits_admission_configurations_or_reads_secrets() -> None:
    grants = granted(one("rbac/role.yaml", "ClusterRole"))
    admission = {(v, n) for g, _, v, n in grants if g == "admissionregistration.k8s.io"}
    assert admission == {("patch", WEBHOOK_CONFIG)}
    assert {v for _, r, v, _ in grants if r == "secrets"} == {"create"}
    # Beside its own webhook CA (by name, at home), the one call that reads a Secret reads one a
    # spec names, and needs its owner's grant, not the operator's roles.
    readers = {
        name
        for name, needed in NEEDED_BY.items()
        if any(p.resource == "secrets" and p.verb == "get" and not p.home for p in needed)
    }
    assert readers == {"read_opted_in_secret"}
    assert all(p.tenant for p in NEEDED_BY["read_opted_in_secret"])


def test_the_webhook_rule_names_the_configuration_the_operator_manages_by_default() -> None:
    names = {n for (_, r, _, n) in granted(one("rbac/role.yaml", "ClusterRole")) if r.startswith("validating") and n}
    assert names == {config.parser().get_default("webhook_config_name")}
    assert one("webhook/configuration.yaml", "ValidatingWebhookConfiguration")["metadata"]["name"] in names


def test_the_namespaced_variant_grants_the_same_with_a_role_in_the_watched_namespace() -> None:
    cluster_wide = granted(one("rbac/role.yaml", "ClusterRole"))
    role = one("namespaced/role.yaml", "Role")
    cluster_role = one("namespaced/cluster_role.yaml", "ClusterRole")
    assert granted(role) == {g for g in cluster_wide if g[1] not in CLUSTER_SCOPED}
    assert granted(cluster_role) == {g for g in cluster_wide if g[1] in CLUSTER_SCOPED}
    account = one("rbac/service_account.yaml", "ServiceAccount")["metadata"]
    subject = {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    binding = one("namespaced/role.yaml", "RoleBinding")
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"] == "bots"
    assert binding["subjects"] == [subject]
    assert one("namespaced/cluster_role.yaml", "ClusterRoleBinding")["subjects"] == [subject]
    text = (MANIFESTS / "namespaced" / "kustomization.yaml").read_text()
    assert "value: --namespace=bots" in text
    assert text.count("values: [bots]") == len(build_configuration_for_manifests()["webhooks"])


def test_the_binding_gives_the_role_to_the_deployments_service_account() -> None:
    binding = one("rbac/role_binding.yaml", "ClusterRoleBinding")
    account = one("rbac/service_account.yaml", "ServiceAccount")["metadata"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": one("rbac/role.yaml", "ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    assert deployment()["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]


# --- the Deployment ------------------------------------------------------------------------


def deployment() -> Obj:
    return one("manager/manager.yaml", "Deployment")


def container() -> Obj:
    only: Obj
    [only] = deployment()["spec"]["template"]["spec"]["containers"]
    return only


def test_two_replicas_rolled_one_at_a_time_kept_apart_and_never_both_drained() -> None:
    spec = deployment()["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    labels = spec["selector"]["matchLabels"]
    [term] = spec["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": labels},
    }
    budget = one("manager/disruption_budget.yaml", "PodDisruptionBudget")
    assert budget["metadata"]["namespace"] == deployment()["metadata"]["namespace"]
    assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": labels}}


def test_the_replicas_elect_a_leader_on_the_lease_their_role_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("SCHEDULEDBOT_LEADER")]:
        monkeypatch.delenv(name)
    namespace = deployment()["metadata"]["namespace"]
    monkeypatch.setenv("POD_NAMESPACE", namespace)
    pod_name = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    assert pod_name in container()["env"]
    settings = config.load([a.replace("$(POD_NAMESPACE)", namespace) for a in container()["args"]])
    assert settings.leader_election
    assert settings.leader_election_namespace == one("rbac/own_namespace_role.yaml", "Role")["metadata"]["namespace"]
    assert settings.leader_election_lease_name == LEASE
    # The replicas share one webhook CA: the Secret the Role names is the one they use.
    assert settings.webhook_configuration == "patch"
    assert webhook_ca.secret_name(settings.webhook_config_name) == WEBHOOK_CA


def test_the_pod_meets_the_restricted_pod_security_standard() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is True
    assert not {"hostNetwork", "hostPID", "hostIPC"} & pod.keys()
    security = container()["securityContext"]
    assert security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # Beside emptyDirs, only the token key's Secret (the restricted standard allows Secret volumes).
    assert [v for v in pod["volumes"] if "emptyDir" not in v] == [
        {"name": "token-key", "secret": {"secretName": "scheduledbot-token-key", "defaultMode": 0o444}}
    ]
    assert {m["mountPath"] for m in container()["volumeMounts"]} == {"/tmp", "/etc/scheduledbot/token-key"}


def test_service_links_cannot_shadow_the_operators_settings() -> None:
    # A kubelet puts every Service of the Pod's namespace into its environment, docker-link style:
    # <NAME>_SERVICE_HOST, <NAME>_SERVICE_PORT, <NAME>_PORT=tcp://<ip>:<port>, ...
    services = [one("webhook/service.yaml", "Service"), one("prometheus/metrics_service.yaml", "Service")]
    linked = {
        f"{s['metadata']['name'].upper().replace('-', '_')}_{suffix}"
        for s in services
        for suffix in ("SERVICE_HOST", "SERVICE_PORT", "PORT")
    }
    settings = set(re.findall(r"\[(SCHEDULEDBOT_[A-Z_]+)", config.parser().format_help()))
    assert {"SCHEDULEDBOT_WEBHOOK_PORT", "SCHEDULEDBOT_METRICS_PORT"} <= linked & settings, "the clash is real"
    assert deployment()["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_the_image_runs_as_the_user_the_pod_declares() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert user, "the Dockerfile must set a numeric USER"
    # ... and one with a passwd entry: kopf looks its name up (getpass.getuser()) at start.
    assert re.search(rf"useradd --uid {user[1]} --gid {user[2]} ", dockerfile)
    pod = deployment()["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(user[1]), int(user[2]))


def test_the_arguments_are_valid_operator_flags_for_the_in_cluster_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SCHEDULEDBOT_WEBHOOK_SERVICE",
        "SCHEDULEDBOT_METRICS_PORT",
        "SCHEDULEDBOT_HEALTH_PORT",
        "SCHEDULEDBOT_WEBHOOK_PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    pod_namespace = {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    assert pod_namespace in container()["env"]
    namespace = deployment()["metadata"]["namespace"]
    args = [a.replace("$(POD_NAMESPACE)", namespace) for a in container()["args"]]
    settings = config.load(args)
    service = one("webhook/service.yaml", "Service")["metadata"]
    assert settings.webhook_service == f"{service['namespace']}/{service['name']}"
    assert settings.webhook_cert_dir is not None and settings.webhook_cert_dir.is_relative_to("/tmp")
    assert settings.webhook
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert ports == {"metrics": settings.metrics_port, "health": settings.health_port, "webhook": settings.webhook_port}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container()[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_the_token_key_comes_from_a_mounted_secret_and_probes_reach_health_on_the_pods_address() -> None:
    settings = config.load(container()["args"])
    assert settings.token_key_file is not None
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    assert settings.token_key_file.parent == Path(mounts["token-key"])
    assert (settings.health_listen, settings.metrics_listen) == ("0.0.0.0", "0.0.0.0")


def test_bots_without_a_template_run_the_operators_own_image() -> None:
    assert container()["image"] == config.DEFAULT_IMAGE


def test_requests_and_a_memory_limit_but_no_cpu_limit() -> None:
    resources = container()["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert resources["limits"].keys() == {"memory"}


# --- Services ------------------------------------------------------------------------------


def test_the_webhook_service_sends_443_to_the_webhook_port() -> None:
    service = one("webhook/service.yaml", "Service")
    assert service["spec"]["selector"] == deployment()["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "webhook", "port": 443, "targetPort": "webhook"}]


def test_the_service_monitor_scrapes_the_metrics_service_only() -> None:
    monitor = one("prometheus/monitor.yaml", "ServiceMonitor")
    metrics = one("prometheus/metrics_service.yaml", "Service")
    webhook = one("webhook/service.yaml", "Service")
    selector: dict[str, str] = monitor["spec"]["selector"]["matchLabels"]

    def selected(service: Obj) -> bool:
        labels: dict[str, str] = service["metadata"].get("labels") or {}
        return selector.items() <= labels.items()

    assert selected(metrics) and not selected(webhook)
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in metrics["spec"]["ports"]]
    assert metrics["spec"]["ports"][0]["targetPort"] == "metrics"


# --- samples -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "platform"),
    [
        ("zoom.yaml", Platform.ZOOM),
        ("google_meet.yaml", Platform.GOOGLE_MEET),
        ("teams.yaml", Platform.MICROSOFT_TEAMS),
    ],
)
def test_each_sample_is_a_valid_scheduled_bot_of_its_platform(sample: str, platform: Platform) -> None:
    bot = one(f"samples/{sample}", "ScheduledBot")
    assert bot["apiVersion"] == "meetingbots.dev/v1alpha1"
    assert parse_spec(bot["spec"], extra_hosts=frozenset()).platform is platform


@pytest.mark.parametrize("sample", ["weekly_sync.yaml", "calendar.yaml"])
def test_each_schedule_sample_is_a_valid_bot_schedule(sample: str) -> None:
    schedule = one(f"samples/{sample}", "BotSchedule")
    assert schedule["apiVersion"] == "meetingbots.dev/v1alpha1"
    valid = parse_schedule_spec(schedule["spec"], extra_hosts=frozenset())
    if valid.kind is SourceKind.ICAL:
        secret = one(f"samples/{sample}", "Secret")
        ref = schedule["spec"]["ical"]["urlSecretRef"]
        assert secret["metadata"]["name"] == ref["name"] and ref["key"] in secret["stringData"]
        assert secret["metadata"]["labels"][FEED_SECRET_LABEL] == "true", "the operator reads only labelled Secrets"


def test_the_samples_show_an_offset_without_colon_a_custom_template_and_bot_config() -> None:
    assert one("samples/zoom.yaml", "ScheduledBot")["spec"]["joinAt"].endswith("+0000")
    [bot] = one("samples/google_meet.yaml", "ScheduledBot")["spec"]["template"]["spec"]["containers"]
    assert bot["image"] != config.DEFAULT_IMAGE and bot["resources"]["requests"]
    assert one("samples/teams.yaml", "ScheduledBot")["spec"]["botConfig"]


# --- the webhook configuration -------------------------------------------------------------


def build_configuration_for_manifests() -> Obj:
    service = one("webhook/service.yaml", "Service")["metadata"]
    return build_configuration(
        name=WEBHOOK_CONFIG,
        ca_pem=None,
        host="",
        port=0,
        service=f"{service['namespace']}/{service['name']}",
        namespaces=(),
    )


def test_the_installed_webhook_configuration_is_the_one_the_operator_would_write() -> None:
    installed = one("webhook/configuration.yaml", "ValidatingWebhookConfiguration")
    assert installed["webhooks"] == build_configuration_for_manifests()["webhooks"]
    assert "caBundle" not in str(installed), "the operator (or cert-manager) sets the CA"
    policies = {w["name"]: w["failurePolicy"] for w in installed["webhooks"]}
    assert policies == {
        "validate.scheduledbots.meetingbots.dev": "Ignore",
        "templates.scheduledbots.meetingbots.dev": "Fail",
        "validate.botschedules.meetingbots.dev": "Ignore",
    }


def test_the_deployment_patches_the_installed_configuration_and_never_writes_one() -> None:
    assert "--webhook-configuration=patch" in container()["args"]


# --- network policies ------------------------------------------------------------------------


def test_the_operators_policy_selects_its_pod_and_opens_only_the_webhook_and_metrics_ports() -> None:
    policy = one("networkpolicy/operator.yaml", "NetworkPolicy")
    assert policy["metadata"]["namespace"] == deployment()["metadata"]["namespace"]
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment()["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    opened = [port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]]
    assert opened == ["webhook", "metrics"]
    assert set(opened) <= {p["name"] for p in container()["ports"]}
    assert all(rule["from"] for rule in policy["spec"]["ingress"]), "every opening names its source"


def test_the_bots_policy_lets_only_the_operator_reach_the_control_port() -> None:
    policy = one("networkpolicy/bots/bots.yaml", "NetworkPolicy")
    assert "namespace" not in policy["metadata"], "applied into each bot namespace"
    assert policy["spec"]["podSelector"] == {"matchExpressions": [{"key": LABEL, "operator": "Exists"}]}
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": CONTROL_PORT_NAME}]
    [source] = rule["from"]
    assert source["podSelector"]["matchLabels"] == deployment()["spec"]["selector"]["matchLabels"]
    assert source["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": deployment()["metadata"]["namespace"]
    }


# --- cert-manager ---------------------------------------------------------------------------------


def test_the_cert_manager_variant_serves_the_issued_certificate_and_lets_the_injector_set_the_ca() -> None:
    text = (MANIFESTS / "cert-manager" / "kustomization.yaml").read_text()
    certificate = one("cert-manager/certificate.yaml", "Certificate")
    service = one("webhook/service.yaml", "Service")["metadata"]
    assert f"{service['name']}.{service['namespace']}.svc" in certificate["spec"]["dnsNames"]
    assert f"secretName: {certificate['spec']['secretName']}" in text
    assert "--webhook-configuration=external" in text
    assert f"cert-manager.io/inject-ca-from: {service['namespace']}/{certificate['metadata']['name']}" in text
