"""The Pod Security baseline on the bot Pod: every control, each violation named by its field and rule."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from scheduledbot.core.podsecurity import BASELINE_CAPABILITIES, SAFE_SYSCTLS, baseline_violations

BOT: dict[str, Any] = {
    "metadata": {"labels": {"team": "a"}},
    "spec": {
        "containers": [{"name": "bot", "image": "bot:1", "ports": [{"name": "control", "containerPort": 8181}]}],
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
    },
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """BOT with `value` at the dotted `path` (list indexes as numbers), creating objects on the way."""
    pod = copy.deepcopy(BOT)
    node: Any = pod
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part, following in itertools.pairwise(parts):
        if isinstance(part, int):
            while len(node) <= part:
                node.append({})
            node = node[part]
        else:
            node = node.setdefault(part, [] if isinstance(following, int) else {})
    node[parts[-1]] = value
    return pod


def violations(pod: dict[str, Any]) -> list[str]:
    return [str(error) for error in baseline_violations(pod, prefix="spec.template")]


def test_the_plain_bot_passes() -> None:
    assert violations(BOT) == []


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "spec.hostNetwork",
            True,
            "spec.template.spec.hostNetwork: not allowed (Pod Security baseline: host namespaces)",
        ),
        ("spec.hostPID", True, "spec.template.spec.hostPID: not allowed (Pod Security baseline: host namespaces)"),
        ("spec.hostIPC", True, "spec.template.spec.hostIPC: not allowed (Pod Security baseline: host namespaces)"),
        (
            "spec.securityContext.windowsOptions.hostProcess",
            True,
            "spec.template.spec.securityContext.windowsOptions.hostProcess: not allowed "
            "(Pod Security baseline: HostProcess)",
        ),
        (
            "spec.containers.0.securityContext.windowsOptions.hostProcess",
            True,
            "spec.template.spec.containers[0].securityContext.windowsOptions.hostProcess: not allowed "
            "(Pod Security baseline: HostProcess)",
        ),
        (
            "spec.containers.0.securityContext.privileged",
            True,
            "spec.template.spec.containers[0].securityContext.privileged: not allowed "
            "(Pod Security baseline: privileged containers)",
        ),
        (
            "spec.initContainers.0.securityContext.privileged",
            True,
            "spec.template.spec.initContainers[0].securityContext.privileged: not allowed "
            "(Pod Security baseline: privileged containers)",
        ),
        (
            "spec.ephemeralContainers.0.securityContext.privileged",
            True,
            "spec.template.spec.ephemeralContainers[0].securityContext.privileged: not allowed "
            "(Pod Security baseline: privileged containers)",
        ),
        (
            "spec.containers.0.securityContext.capabilities.add",
            ["NET_BIND_SERVICE", "SYS_ADMIN"],
            'spec.template.spec.containers[0].securityContext.capabilities.add[1]: "SYS_ADMIN" is not allowed '
            "(Pod Security baseline: capabilities)",
        ),
        (
            "spec.volumes",
            [{"name": "root", "hostPath": {"path": "/"}}],
            "spec.template.spec.volumes[0].hostPath: not allowed (Pod Security baseline: hostPath volumes)",
        ),
        (
            "spec.containers.0.ports.0.hostPort",
            8181,
            "spec.template.spec.containers[0].ports[0].hostPort: 8181 is not allowed "
            "(Pod Security baseline: host ports)",
        ),
        (
            "spec.securityContext.appArmorProfile",
            {"type": "Unconfined"},
            'spec.template.spec.securityContext.appArmorProfile.type: "Unconfined" is not allowed '
            "(Pod Security baseline: AppArmor)",
        ),
        (
            "spec.containers.0.securityContext.appArmorProfile",
            {"type": "Unconfined"},
            'spec.template.spec.containers[0].securityContext.appArmorProfile.type: "Unconfined" is not allowed '
            "(Pod Security baseline: AppArmor)",
        ),
        (
            "metadata.annotations",
            {"container.apparmor.security.beta.kubernetes.io/bot": "unconfined"},
            "spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/bot]: "
            '"unconfined" is not allowed (Pod Security baseline: AppArmor)',
        ),
        (
            "spec.securityContext.seLinuxOptions.type",
            "spc_t",
            'spec.template.spec.securityContext.seLinuxOptions.type: "spc_t" is not allowed '
            "(Pod Security baseline: SELinux)",
        ),
        (
            "spec.containers.0.securityContext.seLinuxOptions.user",
            "system_u",
            'spec.template.spec.containers[0].securityContext.seLinuxOptions.user: "system_u" is not allowed '
            "(Pod Security baseline: SELinux)",
        ),
        (
            "spec.securityContext.seLinuxOptions.role",
            "sysadm_r",
            'spec.template.spec.securityContext.seLinuxOptions.role: "sysadm_r" is not allowed '
            "(Pod Security baseline: SELinux)",
        ),
        (
            "spec.containers.0.securityContext.procMount",
            "Unmasked",
            'spec.template.spec.containers[0].securityContext.procMount: "Unmasked" is not allowed '
            "(Pod Security baseline: /proc mount type)",
        ),
        (
            "spec.securityContext.seccompProfile",
            {"type": "Unconfined"},
            'spec.template.spec.securityContext.seccompProfile.type: "Unconfined" is not allowed '
            "(Pod Security baseline: seccomp)",
        ),
        (
            "spec.containers.0.securityContext.seccompProfile",
            {"type": "Unconfined"},
            'spec.template.spec.containers[0].securityContext.seccompProfile.type: "Unconfined" is not allowed '
            "(Pod Security baseline: seccomp)",
        ),
        (
            "spec.securityContext.sysctls",
            [{"name": "kernel.shm_rmid_forced", "value": "1"}, {"name": "kernel.msgmax", "value": "1"}],
            'spec.template.spec.securityContext.sysctls[1].name: "kernel.msgmax" is not allowed '
            "(Pod Security baseline: sysctls)",
        ),
        (
            "spec.containers.0.readinessProbe",
            {"httpGet": {"host": "169.254.169.254", "path": "/", "port": 80}},
            'spec.template.spec.containers[0].readinessProbe.httpGet.host: "169.254.169.254" is not allowed '
            "(Pod Security baseline: host probes and lifecycle hooks)",
        ),
        (
            "spec.containers.0.lifecycle",
            {"preStop": {"tcpSocket": {"host": "10.0.0.1", "port": 22}}},
            'spec.template.spec.containers[0].lifecycle.preStop.tcpSocket.host: "10.0.0.1" is not allowed '
            "(Pod Security baseline: host probes and lifecycle hooks)",
        ),
    ],
)
def test_each_baseline_control_refuses_its_field_naming_the_rule(path: str, value: Any, message: str) -> None:
    assert violations(with_(path, value)) == [message]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.hostNetwork", False),
        ("spec.containers.0.securityContext.privileged", False),
        ("spec.containers.0.securityContext.capabilities", {"add": sorted(BASELINE_CAPABILITIES), "drop": ["ALL"]}),
        ("spec.containers.0.ports.0.hostPort", 0),
        ("spec.securityContext.appArmorProfile", {"type": "Localhost", "localhostProfile": "bots"}),
        ("metadata.annotations", {"container.apparmor.security.beta.kubernetes.io/bot": "localhost/bots"}),
        ("spec.securityContext.seLinuxOptions", {"type": "container_t", "level": "s0:c1,c2"}),
        ("spec.containers.0.securityContext.procMount", "Default"),
        ("spec.securityContext.seccompProfile", {"type": "Localhost", "localhostProfile": "bots.json"}),
        ("spec.securityContext.sysctls", [{"name": name, "value": "1"} for name in sorted(SAFE_SYSCTLS)]),
        ("spec.containers.0.readinessProbe", {"httpGet": {"path": "/v1/ready", "port": "control"}}),
        ("spec.volumes", [{"name": "scratch", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}]),
        # Not baseline's business (restricted's, or RBAC's): a namespace label or the access review decides.
        ("spec.securityContext.runAsUser", 0),
        ("spec.nodeName", "node-1"),
        ("spec.priorityClassName", "system-node-critical"),
        ("spec.tolerations", [{"operator": "Exists"}]),
        ("spec.serviceAccountName", "admin"),
    ],
)
def test_what_baseline_allows_passes(path: str, value: Any) -> None:
    assert violations(with_(path, value)) == []


def test_every_violation_is_reported_at_once() -> None:
    pod = with_("spec.hostNetwork", True)
    pod["spec"]["hostPID"] = True
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}
    assert len(violations(pod)) == 4


def test_a_flag_of_the_wrong_type_counts_as_set_and_a_malformed_object_is_left_to_the_api_server() -> None:
    assert violations(with_("spec.hostNetwork", "yes")) == [
        "spec.template.spec.hostNetwork: not allowed (Pod Security baseline: host namespaces)"
    ]
    for path, value in (("spec.volumes", "x"), ("spec.containers", "x"), ("spec.securityContext", 3)):
        assert violations(with_(path, value)) == []


def test_the_prefix_names_where_the_template_comes_from() -> None:
    [error] = baseline_violations(with_("spec.hostPID", True), prefix='BotClass "std" spec.template')
    assert (
        str(error) == 'BotClass "std" spec.template.spec.hostPID: not allowed (Pod Security baseline: host namespaces)'
    )
