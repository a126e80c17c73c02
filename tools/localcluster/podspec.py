"""Pure pieces of the fake kubelet: how a Pod spec turns into a local process.

Kept apart from `kubelet` (which does I/O) so that each rule can be read, and
tested, on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

Obj = dict[str, Any]


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion, as in command, args and env values.

    A port of k8s.io/kubernetes third_party/forked/golang/expansion: `$(NAME)`
    becomes the variable's value when NAME is defined and stays as written when
    not; `$$` is an escaped `$` (so `$$(NAME)` yields `$(NAME)`); any other `$`
    is kept.
    """
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == "$":
                out.append("$")
                advance = 1
            elif rest[0] == "(":
                closing = rest.find(")", 1)
                if closing == -1:
                    out.append("$(")
                    advance = 1
                else:
                    name = rest[1:closing]
                    out.append(variables.get(name, f"$({name})"))
                    advance = closing + 1
            else:
                out.append("$" + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: Obj, field_path: str, pod_ip: str, host_ip: str) -> str | None:
    """The value of a downward-API `fieldRef`, or None for an unsupported path.

    The Pod IP is passed in rather than read from the Pod: the kubelet knows it
    before the status carrying it is written.
    """
    meta = pod["metadata"]
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if field_path in simple:
        return str(simple[field_path])
    match = _SUBSCRIPT.match(field_path)
    if match:
        return str(meta.get(match.group(1), {}).get(match.group(2), ""))
    return None


def image_registry_host(image: str) -> str:
    """The registry host of an image reference (docker.io when none is named)."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first.split(":")[0]
    return "docker.io"


def unpullable(image: str) -> bool:
    """Images of the reserved `.invalid` TLD (RFC 2606) can never be pulled."""
    host = image_registry_host(image)
    return host == "invalid" or host.endswith(".invalid")


def pull_error(image: str) -> str:
    """The message containerd gives for a registry host that does not resolve."""
    host = image_registry_host(image)
    repository = image.split("/", 1)[1] if image.startswith(host) else image
    name, _, reference = repository.partition("@")
    if not reference:
        name, _, reference = name.rpartition(":") if ":" in name else (name, "", "latest")
    return (
        f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": '
        f'failed to do request: Head "https://{host}/v2/{name}/manifests/{reference}": '
        f"dial tcp: lookup {host}: no such host"
    )


def rewrite_mount_paths(value: str, mounts: Mapping[str, Path]) -> str:
    """Point a path inside a volumeMount at the directory that stands in for it.

    The longest matching mountPath wins, so nested mounts resolve correctly.
    """
    for mount_path in sorted(mounts, key=len, reverse=True):
        prefix = mount_path.rstrip("/")
        if value == prefix or value.startswith(prefix + "/"):
            return str(mounts[mount_path]) + value[len(prefix) :]
    return value


def container_port(container: Obj, port: int | str) -> int | None:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            number: int = declared["containerPort"]
            return number
    return None


def exit_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


def should_restart(restart_policy: str, exit_code: int) -> bool:
    return restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0)


TERMINAL_PHASES: Final = ("Succeeded", "Failed")
