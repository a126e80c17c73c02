"""Pure builders of a ScheduledBot's children: its Pod and its token Secret.

Why builders return plain dicts
===============================
As in dask-kubernetes' `build_*_spec` and sample-controller's `newDeployment`,
children are data built from the parent by one function each, never f-string YAML,
so a table test can check every field and the adapters send them as they are.

Why the names are fixed
=======================
The Pod is `<name>-bot` (the CronJob controller names Jobs by their schedule for
the same reason): a restart, or two passes racing, can only ever create *the* Pod.
AlreadyExists is the work done only if the Pod found is owned by this very bot (its
uid): anyone who may create Pods in the namespace can take the name first, and such
a Pod is never adopted (the bot fails `NameConflict`).

The token Secret is `<name>-bot-token-<tag>`, the tag an HMAC of the bot's uid under
the operator's key (`core.tokens`): nobody without the key can create a Secret of
that name before the operator, so AlreadyExists on it is the operator's own Secret
from an earlier pass, and the operator needs no right to read Secrets to know it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from scheduledbot.api.models import ValidSpec
from scheduledbot.api.resource import API_VERSION, KIND
from scheduledbot.protocol import (
    CONTROL_PORT_NAME,
    DEFAULT_CONTROL_PORT,
    ENV_BOT_CONFIG,
    ENV_BOT_CONTROL_PORT,
    ENV_BOT_NAME,
    ENV_BOT_SELF_JOIN_DELAY_SECONDS,
    ENV_BOT_TOKEN_FILE,
    ENV_JOIN_AT,
    ENV_JOIN_DEADLINE_SECONDS,
    ENV_MAX_DURATION_SECONDS,
    ENV_MEETING_URL,
    ENV_POD_IP,
    ENV_POD_NAME,
    ENV_SCHEDULEDBOT_NAME,
    ENV_SCHEDULEDBOT_NAMESPACE,
    READY_PATH,
)
from scheduledbot.timestamps import format_time

LABEL: Final = "meetingbots.dev/scheduledbot"
JOIN_AT_ANNOTATION: Final = "meetingbots.dev/join-at"
TOKEN_MOUNT: Final = "/var/run/secrets/meetingbots.dev/token"
TOKEN_KEY: Final = "token"

_MAX_NAME: Final = 253


def pod_name(name: str) -> str:
    return _child_name(name, "-bot")


def secret_name(name: str, tag: str) -> str:
    """The token Secret's name; `tag` comes from `core.tokens.secret_tag`."""
    return _child_name(name, f"-bot-token-{tag}")


def _child_name(name: str, suffix: str) -> str:
    if len(name) + len(suffix) <= _MAX_NAME:
        return name + suffix
    # Still deterministic for very long names: a prefix plus a digest of the whole name.
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: _MAX_NAME - len(suffix) - 11]}-{digest}{suffix}"


def label_value(name: str) -> str:
    """Label values stop at 63 characters and must end alphanumeric."""
    return name[:63].rstrip("-.")


def owner_reference(*, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_secret(*, name: str, namespace: str, uid: str, token: str, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret,
            "namespace": namespace,
            "labels": {LABEL: label_value(name)},
            "ownerReferences": [owner_reference(name=name, uid=uid)],
        },
        "type": "Opaque",
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def build_pod(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: ValidSpec,
    template: Mapping[str, Any],
    join_at: datetime,
    join_deadline_seconds: int,
    max_duration_seconds: int,
    self_join_delay_seconds: float,
    token_secret: str,
) -> dict[str, Any]:
    """The bot Pod: the template, plus the bot protocol's environment, port, probe and token Secret."""
    tpl = copy.deepcopy(template)
    meta = tpl.get("metadata") or {}
    pod_spec: dict[str, Any] = tpl.get("spec") or {}
    containers = pod_spec.get("containers") or []
    if not containers:
        raise ValueError("spec.template.spec.containers: at least one container is required")
    bot = containers[0]
    port = _control_port(bot)
    ours = _env(
        name=name,
        namespace=namespace,
        spec=spec,
        join_at=join_at,
        port=port,
        join_deadline_seconds=join_deadline_seconds,
        max_duration_seconds=max_duration_seconds,
        self_join_delay_seconds=self_join_delay_seconds,
    )
    # The protocol's variables win over a template's variable of the same name.
    taken = {e["name"] for e in ours}
    bot["env"] = ours + [e for e in bot.get("env") or [] if e.get("name") not in taken]
    bot.setdefault(
        "readinessProbe",
        {
            "httpGet": {"path": READY_PATH, "port": CONTROL_PORT_NAME},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    bot["volumeMounts"] = [m for m in bot.get("volumeMounts") or [] if m.get("mountPath") != TOKEN_MOUNT] + [
        {"name": "meetingbots-token", "mountPath": TOKEN_MOUNT, "readOnly": True}
    ]
    pod_spec["volumes"] = [v for v in pod_spec.get("volumes") or [] if v.get("name") != "meetingbots-token"] + [
        {"name": "meetingbots-token", "secret": {"secretName": token_secret, "defaultMode": 0o444}}
    ]
    # A bot that crashed must not come back and join a second time.
    pod_spec["restartPolicy"] = "Never"
    # Bots talk to meetings, not to the Kubernetes API, unless the template asks.
    pod_spec.setdefault("automountServiceAccountToken", False)
    pod_spec.setdefault("enableServiceLinks", False)
    labels = {**(meta.get("labels") or {}), LABEL: label_value(name)}
    annotations = {**(meta.get("annotations") or {}), JOIN_AT_ANNOTATION: format_time(join_at)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(name),
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(name=name, uid=uid)],
        },
        "spec": pod_spec,
    }


def _control_port(container: dict[str, Any]) -> int:
    ports = container.setdefault("ports", [])
    for port in ports:
        if port.get("name") == CONTROL_PORT_NAME:
            return int(port["containerPort"])
    ports.append({"name": CONTROL_PORT_NAME, "containerPort": DEFAULT_CONTROL_PORT, "protocol": "TCP"})
    return DEFAULT_CONTROL_PORT


def control_port_of(pod: dict[str, Any]) -> int:
    """The bot protocol port of an observed Pod."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == CONTROL_PORT_NAME:
                return int(port["containerPort"])
    return DEFAULT_CONTROL_PORT


def _env(
    *,
    name: str,
    namespace: str,
    spec: ValidSpec,
    join_at: datetime,
    port: int,
    join_deadline_seconds: int,
    max_duration_seconds: int,
    self_join_delay_seconds: float,
) -> list[dict[str, Any]]:
    def field(path: str) -> dict[str, Any]:
        return {"fieldRef": {"fieldPath": path}}

    return [
        {"name": ENV_MEETING_URL, "value": spec.meeting_url},
        {"name": ENV_BOT_NAME, "value": spec.bot_name},
        {"name": ENV_JOIN_AT, "value": format_time(join_at)},
        {"name": ENV_BOT_CONFIG, "value": json.dumps(spec.bot_config or {}, sort_keys=True, separators=(",", ":"))},
        {"name": ENV_SCHEDULEDBOT_NAME, "value": name},
        {"name": ENV_SCHEDULEDBOT_NAMESPACE, "value": namespace},
        {"name": ENV_POD_NAME, "valueFrom": field("metadata.name")},
        {"name": ENV_POD_IP, "valueFrom": field("status.podIP")},
        {"name": ENV_BOT_CONTROL_PORT, "value": str(port)},
        {"name": ENV_BOT_TOKEN_FILE, "value": f"{TOKEN_MOUNT}/{TOKEN_KEY}"},
        {"name": ENV_BOT_SELF_JOIN_DELAY_SECONDS, "value": _num(self_join_delay_seconds)},
        {"name": ENV_JOIN_DEADLINE_SECONDS, "value": str(join_deadline_seconds)},
        {"name": ENV_MAX_DURATION_SECONDS, "value": str(max_duration_seconds)},
    ]


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def default_template(*, image: str) -> dict[str, Any]:
    """The operator-wide template when a ScheduledBot has none: the demo bot."""
    return {
        "spec": {
            "containers": [
                {
                    "name": "bot",
                    "image": image,
                    "command": ["python", "-m", "scheduledbot.demo_bot"],
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "runAsNonRoot": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        }
    }
