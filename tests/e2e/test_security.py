"""A shared cluster's personas, against the real API server and the operator as users run it.

alice may create ScheduledBots in her namespace and nothing else; bob may also create
Pods and read Secrets there, as a namespace admin may; carol may create Pods but not read
Secrets. They apply ScheduledBots with `kubectl --as`, as the API server then sends their
identity to the webhook. An inline template must not let alice do what she could not do
herself; it must let bob do what he could do himself, except what the Pod Security
baseline refuses to everyone. The platform team's BotClass is what alice can use instead.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from localcluster.bots import Bots, soon
from localcluster.operator import OperatorProcess

pytestmark = pytest.mark.cluster

BOT = {"name": "bot", "image": "registry.example.com/notetaker:1.4"}


@dataclass(frozen=True)
class Escalation:
    """A template that asks for more than a ScheduledBot should give, and what refuses it."""

    name: str
    spec: dict[str, Any]
    #: The baseline refuses it to everyone; else it is refused only to users who could not create it.
    baseline: str | None = None


ESCALATIONS = [
    Escalation(
        "host-network",
        {"hostNetwork": True},
        "spec.template.spec.hostNetwork: not allowed (Pod Security baseline: host namespaces)",
    ),
    Escalation(
        "host-pid",
        {"hostPID": True},
        "spec.template.spec.hostPID: not allowed (Pod Security baseline: host namespaces)",
    ),
    Escalation(
        "host-ipc",
        {"hostIPC": True},
        "spec.template.spec.hostIPC: not allowed (Pod Security baseline: host namespaces)",
    ),
    Escalation(
        "host-path-root",
        {
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "containers": [{**BOT, "volumeMounts": [{"name": "root", "mountPath": "/host"}]}],
        },
        "spec.template.spec.volumes[0].hostPath: not allowed (Pod Security baseline: hostPath volumes)",
    ),
    Escalation(
        "sys-admin",
        {"containers": [{**BOT, "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]},
        'spec.template.spec.containers[0].securityContext.capabilities.add[0]: "SYS_ADMIN" is not allowed '
        "(Pod Security baseline: capabilities)",
    ),
    Escalation("run-as-root", {"securityContext": {"runAsUser": 0}}),
    Escalation("node-name", {"nodeName": "local-node"}),
    Escalation("node-critical", {"priorityClassName": "system-node-critical"}),
    Escalation("tolerate-everything", {"tolerations": [{"operator": "Exists"}]}),
    Escalation("admin-service-account", {"serviceAccountName": "admin-sa", "automountServiceAccountToken": True}),
    Escalation("secret-env", {"containers": [{**BOT, "envFrom": [{"secretRef": {"name": "db"}}]}]}),
]


@pytest.fixture
def people(cluster: Any, namespace: str, crd: None) -> Iterator[None]:
    """alice, bob and carol's Roles; a Secret and an admin ServiceAccount to reach for."""

    def kubectl(*args: str) -> None:
        cluster.kubectl(*args, "-n", namespace)

    kubectl("create", "role", "bots", "--verb=get,list,watch,create,update,patch,delete", "--resource=scheduledbots")
    kubectl("create", "role", "pods", "--verb=get,list,create,delete", "--resource=pods")
    kubectl("create", "role", "secrets", "--verb=get", "--resource=secrets,configmaps")
    for user, roles in (("alice", ["bots"]), ("bob", ["bots", "pods", "secrets"]), ("carol", ["bots", "pods"])):
        for role in roles:
            kubectl("create", "rolebinding", f"{user}-{role}", f"--role={role}", f"--user={user}")
    kubectl("create", "secret", "generic", "db", "--from-literal=PASSWORD=hunter2")
    kubectl("create", "serviceaccount", "admin-sa")
    kubectl("create", "rolebinding", "admin-sa", "--clusterrole=admin", f"--serviceaccount={namespace}:admin-sa")
    yield


def bot(bots: Bots, name: str, **spec: Any) -> dict[str, Any]:
    return bots.manifest(name, join_at=soon(86400), lead=None, **spec)


def template(spec: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"containers": [BOT], **spec}}


def apply_as(cluster: Any, user: str, manifest: dict[str, Any]) -> tuple[bool, str]:
    result = cluster.kubectl("apply", f"--as={user}", "-f", "-", input=json.dumps(manifest), check=False)
    return result.returncode == 0, result.stderr


def test_each_escalation_is_refused_to_a_user_who_may_only_create_scheduled_bots(
    cluster: Any, people: None, operator: OperatorProcess, bots: Bots
) -> None:
    problems = []
    for escalation in ESCALATIONS:
        admitted, stderr = apply_as(cluster, "alice", bot(bots, escalation.name, template=template(escalation.spec)))
        expected = [
            escalation.baseline or f'spec.template: user "alice" may not create Pods in namespace "{bots.namespace}"',
            "denied the request",  # the webhook, not the schema
        ]
        if "serviceAccountName" in escalation.spec:
            expected.append(
                'spec.template.spec.serviceAccountName: user "alice" may not run Pods as ServiceAccount "admin-sa"'
            )
        if escalation.name == "secret-env":
            expected.append(
                'spec.template.spec.containers[0].envFrom[0].secretRef.name: user "alice" may not read Secret "db"'
            )
        if admitted or not all(words in stderr for words in expected):
            problems.append(f"{escalation.name}: admitted={admitted}\n{stderr}")
    assert not problems, "\n".join(problems)


def test_the_same_templates_are_accepted_for_a_user_who_may_create_those_pods_except_beyond_the_baseline(
    cluster: Any, people: None, operator: OperatorProcess, bots: Bots
) -> None:
    problems = []
    for escalation in ESCALATIONS:
        admitted, stderr = apply_as(cluster, "bob", bot(bots, escalation.name, template=template(escalation.spec)))
        if escalation.baseline:
            # hostNetwork, hostPID, hostIPC, hostPath and added capabilities: refused to everyone.
            if admitted or escalation.baseline not in stderr:
                problems.append(f"{escalation.name} (baseline): admitted={admitted}\n{stderr}")
        elif not admitted:
            problems.append(f"{escalation.name}: refused to bob\n{stderr}")
    assert not problems, "\n".join(problems)
    assert bots.get("admin-service-account")["spec"]["template"]["spec"]["serviceAccountName"] == "admin-sa"

    # carol may create Pods but not read Secrets: refused at the Secret, and only there.
    [secret_env] = [e for e in ESCALATIONS if e.name == "secret-env"]
    admitted, stderr = apply_as(cluster, "carol", bot(bots, "leak", template=template(secret_env.spec)))
    assert not admitted
    assert (
        'spec.template.spec.containers[0].envFrom[0].secretRef.name: user "carol" may not read Secret "db" '
        f'in namespace "{bots.namespace}" (RBAC: get secrets)'
    ) in stderr, stderr
    assert "may not create Pods" not in stderr


# --- BotClass: what alice can use instead -----------------------------------------------------


@pytest.fixture
def classes(cluster: Any, namespace: str) -> Iterator[list[str]]:
    """BotClasses are cluster-wide: every class a test makes is named after its namespace and deleted."""
    made: list[str] = []
    yield made
    if made:
        cluster.kubectl("delete", "botclass", *made, "--ignore-not-found", check=False)


def make_class(cluster: Any, classes: list[str], name: str, spec: dict[str, Any], *, default: bool = False) -> str:
    meta: dict[str, Any] = {"name": name}
    if default:
        meta["annotations"] = {"meetingbots.dev/is-default-class": "true"}
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": "meetingbots.dev/v1alpha1", "kind": "BotClass", "metadata": meta, "spec": spec}
        ),
    )
    classes.append(name)
    return name


def test_a_bot_of_a_class_runs_the_platform_teams_template_and_inline_templates_need_the_classs_leave(
    cluster: Any, people: None, operator: OperatorProcess, bots: Bots, classes: list[str]
) -> None:
    # The platform team chose the ServiceAccount and the Secret; alice only names the class.
    recorders = make_class(
        cluster,
        classes,
        f"recorders-{bots.namespace}",
        {
            "template": template(
                {"serviceAccountName": "admin-sa", "containers": [{**BOT, "envFrom": [{"secretRef": {"name": "db"}}]}]}
            )
        },
    )
    admitted, stderr = apply_as(cluster, "alice", bot(bots, "by-class", botClassName=recorders))
    assert admitted, stderr
    admitted, stderr = apply_as(cluster, "alice", bot(bots, "own", botClassName=recorders, template=template({})))
    assert not admitted
    assert f'spec.template: not allowed: BotClass "{recorders}" does not allow inline templates' in stderr, stderr

    # A class that allows inline templates still checks their authors.
    open_class = make_class(cluster, classes, f"open-{bots.namespace}", {"allowInlineTemplate": True})
    manifest = bot(bots, "mine", botClassName=open_class, template=template({"nodeName": "local-node"}))
    admitted, stderr = apply_as(cluster, "alice", manifest)
    assert not admitted and 'user "alice" may not create Pods' in stderr, stderr
    admitted, stderr = apply_as(cluster, "bob", manifest)
    assert admitted, stderr


def test_a_class_limits_platforms_and_sizes_refuses_a_template_beyond_the_baseline_and_may_be_the_default(
    cluster: Any, people: None, operator: OperatorProcess, bots: Bots, classes: list[str]
) -> None:
    strict = make_class(
        cluster,
        classes,
        f"strict-{bots.namespace}",
        {"allowedPlatforms": ["zoom"], "limits": {"maxBotConfigBytes": 64, "maxDurationSeconds": 600}},
    )
    admitted, stderr = apply_as(
        cluster,
        "alice",
        bot(bots, "limits", botClassName=strict, botConfig={"blob": "x" * 100}, maxDurationSeconds=3600),
    )
    assert not admitted
    assert f'spec.meetingUrl: local meetings are not allowed by BotClass "{strict}" (zoom)' in stderr, stderr
    assert f'spec.botConfig: is 111 bytes as JSON; BotClass "{strict}" allows at most 64 bytes' in stderr, stderr
    assert f'spec.maxDurationSeconds: 3600 is more than BotClass "{strict}" allows (600)' in stderr, stderr

    careless = make_class(cluster, classes, f"careless-{bots.namespace}", {"template": template({"hostPID": True})})
    admitted, stderr = apply_as(cluster, "alice", bot(bots, "careless", botClassName=careless))
    assert not admitted
    assert (
        f'BotClass "{careless}" spec.template.spec.hostPID: not allowed (Pod Security baseline: host namespaces)'
        in (stderr)
    )
    admitted, stderr = apply_as(cluster, "alice", bot(bots, "missing", botClassName=f"missing-{bots.namespace}"))
    assert not admitted and f'spec.botClassName: BotClass "missing-{bots.namespace}" does not exist' in stderr

    # The default class applies to bots that name none.
    default = make_class(cluster, classes, f"default-{bots.namespace}", {"allowedPlatforms": ["zoom"]}, default=True)
    # Naming it once makes the webhook read it now, not whenever its watch event arrives.
    apply_as(cluster, "alice", bot(bots, "warm", botClassName=default))
    admitted, stderr = apply_as(cluster, "alice", bot(bots, "unnamed"))
    assert not admitted
    assert f'spec.meetingUrl: local meetings are not allowed by BotClass "{default}" (zoom)' in stderr, stderr
    printed = cluster.kubectl("get", "botclass", default, "-o", "wide").stdout
    assert re.search(rf"^{default}\s+true\s+false\s+\[\"zoom\"\]", printed, re.M), printed


# --- the webhook's door -------------------------------------------------------------------------


def admission_reviews(operator: OperatorProcess) -> float:
    return operator.metrics().total("scheduledbot_admission_reviews_total")


def test_the_webhook_reviews_large_objects_refuses_strangers_and_skips_metadata_writes(
    cluster: Any, operator: OperatorProcess, bots: Bots
) -> None:
    before = admission_reviews(operator)
    manifest = bot(bots, "big", botConfig={"blob": "x" * 1_100_000}, joinAt="2020-01-01T00:00:00Z")
    result = cluster.kubectl("create", "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0
    assert "spec.botConfig: is 1100011 bytes as JSON; at most 32768 bytes are allowed" in result.stderr, result.stderr

    # Only the API server, with its client certificate, gets past the webhook's TLS.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", operator.webhook_port), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionResetError, OSError)),
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        if not tls.recv(1):
            raise ConnectionResetError("closed")
    assert admission_reviews(operator) == before + 1, "the stranger's request was never reviewed"

    # matchConditions: metadata writes never reach the webhook; a spec change does.
    bots.apply(bot(bots, "quiet"))
    assert admission_reviews(operator) == before + 2
    for index in range(3):
        cluster.kubectl("label", "scheduledbot", "quiet", f"round={index}", "--overwrite", "-n", bots.namespace)
    cluster.kubectl("annotate", "scheduledbot", "quiet", "gitops/sync=1", "-n", bots.namespace)
    assert admission_reviews(operator) == before + 2, "matchConditions skip metadata-only updates"
    patch = '{"spec":{"botName":"Q"}}'
    cluster.kubectl("patch", "scheduledbot", "quiet", "-n", bots.namespace, "--type=merge", "-p", patch)
    assert admission_reviews(operator) == before + 3


def test_a_bot_whose_spec_would_now_be_refused_can_still_get_and_lose_metadata(
    cluster: Any, operator: OperatorProcess, bots: Bots
) -> None:
    bots.apply(bots.manifest("aging", join_at=soon(4), lead=None))
    bots.wait_state("aging", "joined", timeout=40)
    # joinAt is in the past now: the spec would be refused as new, but metadata writes (the
    # operator's finalizer, added when it joined, a user's label) pass, and so does a
    # deletion, which the operator's finalizer removal completes.
    assert "meetingbots.dev/leave-meeting" in bots.get("aging")["metadata"]["finalizers"]
    cluster.kubectl("label", "scheduledbot", "aging", "kept=yes", "-n", bots.namespace)
    cluster.kubectl("delete", "scheduledbot", "aging", "-n", bots.namespace, "--timeout=60s")
