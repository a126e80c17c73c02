"""The Pod Security Standards' baseline level, checked on the bot Pod the operator would create.

Why the operator checks it itself
=================================
PodSecurity admission enforces a namespace's level only if someone labelled the
namespace, and an unlabelled namespace admits privileged Pods. The bot Pod is
created by the operator, on behalf of a ScheduledBot's author; whatever the
namespace says, it must never be more than baseline. The namespace's own level,
when it is stricter (restricted), is still enforced by the API server on the
Pod itself (and on the webhook's dry run).

What is checked
===============
The baseline controls as pod-security-admission v0.34 (Kubernetes 1.34) defines
them, field for field: HostProcess, host namespaces, privileged containers,
capabilities beyond the default set, hostPath volumes, host ports, AppArmor,
SELinux, /proc mount type, seccomp, sysctls, and host fields in probes and
lifecycle hooks. Every container list is visited (containers, initContainers,
ephemeralContainers). A flag of the wrong type counts as set when it is truthy
(the checker fails closed); an object or list of the wrong type reads as empty,
which is safe because the API server refuses such a Pod: only a well-formed Pod
is ever created, and on a well-formed Pod this checker sees what the API server
sees.

Each violation is a `FieldError` whose path starts with the caller's prefix, so
the same check speaks of `spec.template.spec.hostNetwork` in a ScheduledBot and
of the class's template for a BotClass.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from scheduledbot.api.errors import FieldError, quote_value

#: Capabilities a container may add under baseline: the container runtimes' defaults.
BASELINE_CAPABILITIES: Final = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
#: The "safe" sysctls (namespaced, isolated per Pod), as of Kubernetes 1.32.
SAFE_SYSCTLS: Final = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    }
)
SELINUX_TYPES: Final = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
APPARMOR_TYPES: Final = frozenset({"RuntimeDefault", "Localhost"})
SECCOMP_TYPES: Final = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION_PREFIX: Final = "container.apparmor.security.beta.kubernetes.io/"
CONTAINER_LISTS: Final = ("initContainers", "containers", "ephemeralContainers")
_PROBES: Final = ("livenessProbe", "readinessProbe", "startupProbe")
_HOOKS: Final = ("postStart", "preStop")


def baseline_violations(pod: Mapping[str, Any], *, prefix: str) -> list[FieldError]:
    """Every baseline violation of `pod` (a Pod or a PodTemplateSpec: `metadata` and `spec`).

    `prefix` replaces the leading `spec` / `metadata` of each path's parent, e.g.
    `spec.template` gives `spec.template.spec.hostNetwork`.
    """
    out: list[FieldError] = []
    spec = _map(pod.get("spec"))
    meta = _map(pod.get("metadata"))

    def bad(path: str, control: str, value: Any = True) -> None:
        shown = "" if value is True else f"{_show(value)} is "
        out.append(FieldError(f"{prefix}.{path}", f"{shown}not allowed (Pod Security baseline: {control})"))

    security = _map(spec.get("securityContext"))
    if _map(security.get("windowsOptions")).get("hostProcess"):
        bad("spec.securityContext.windowsOptions.hostProcess", "HostProcess")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            bad(f"spec.{field}", "host namespaces")
    for index, volume in enumerate(_list(spec.get("volumes"))):
        if isinstance(volume, Mapping) and volume.get("hostPath") is not None:
            bad(f"spec.volumes[{index}].hostPath", "hostPath volumes")
    _security_context(security, "spec.securityContext", bad)
    for index, sysctl in enumerate(_list(security.get("sysctls"))):
        name = _map(sysctl).get("name")
        if name not in SAFE_SYSCTLS:
            bad(f"spec.securityContext.sysctls[{index}].name", "sysctls", name)
    for key, value in _map(meta.get("annotations")).items():
        if str(key).startswith(APPARMOR_ANNOTATION_PREFIX) and not (
            value in ("", "runtime/default") or (isinstance(value, str) and value.startswith("localhost/"))
        ):
            bad(f"metadata.annotations[{key}]", "AppArmor", value)

    for path, container in _containers(spec):
        context = _map(container.get("securityContext"))
        if _map(context.get("windowsOptions")).get("hostProcess"):
            bad(f"{path}.securityContext.windowsOptions.hostProcess", "HostProcess")
        if context.get("privileged"):
            bad(f"{path}.securityContext.privileged", "privileged containers")
        for index, capability in enumerate(_list(_map(context.get("capabilities")).get("add"))):
            if capability not in BASELINE_CAPABILITIES:
                bad(f"{path}.securityContext.capabilities.add[{index}]", "capabilities", capability)
        proc_mount = context.get("procMount")
        if proc_mount not in (None, "Default"):
            bad(f"{path}.securityContext.procMount", "/proc mount type", proc_mount)
        _security_context(context, f"{path}.securityContext", bad)
        for index, port in enumerate(_list(container.get("ports"))):
            host_port = _map(port).get("hostPort")
            if host_port not in (None, 0):
                bad(f"{path}.ports[{index}].hostPort", "host ports", host_port)
        for handler_path, handler in _handlers(container, path):
            for kind in ("httpGet", "tcpSocket"):
                host = _map(handler.get(kind)).get("host")
                if host not in (None, ""):
                    bad(f"{handler_path}.{kind}.host", "host probes and lifecycle hooks", host)
    return out


def _security_context(context: Mapping[str, Any], path: str, bad: Any) -> None:
    """The controls a Pod's and a container's securityContext share: AppArmor, SELinux, seccomp."""
    apparmor = context.get("appArmorProfile")
    if apparmor is not None and _map(apparmor).get("type") not in APPARMOR_TYPES:
        bad(f"{path}.appArmorProfile.type", "AppArmor", _map(apparmor).get("type"))
    selinux = _map(context.get("seLinuxOptions"))
    if (selinux.get("type") or "") not in SELINUX_TYPES:
        bad(f"{path}.seLinuxOptions.type", "SELinux", selinux.get("type"))
    for field in ("user", "role"):
        if selinux.get(field) not in (None, ""):
            bad(f"{path}.seLinuxOptions.{field}", "SELinux", selinux.get(field))
    seccomp = context.get("seccompProfile")
    if seccomp is not None and _map(seccomp).get("type") not in SECCOMP_TYPES:
        bad(f"{path}.seccompProfile.type", "seccomp", _map(seccomp).get("type"))


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for field in CONTAINER_LISTS:
        for index, container in enumerate(_list(spec.get(field))):
            yield f"spec.{field}[{index}]", _map(container)


def _handlers(container: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for probe in _PROBES:
        if probe in container:
            yield f"{path}.{probe}", _map(container[probe])
    lifecycle = _map(container.get("lifecycle"))
    for hook in _HOOKS:
        if hook in lifecycle:
            yield f"{path}.lifecycle.{hook}", _map(lifecycle[hook])


def _map(value: Any) -> Mapping[str, Any]:
    """`value` if it is an object. Anything else reads as empty: its own shape check reports it."""
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _show(value: Any) -> str:
    return quote_value(value) if isinstance(value, str) else quote_value(repr(value))[1:-1]
