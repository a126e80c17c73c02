"""Pods on the fake kubelet behave, through the API, like Pods on a real node."""

from __future__ import annotations

import ipaddress
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import yaml

from localcluster import procs
from localcluster.podspec import Obj
from localcluster.testing import Cluster

pytestmark = pytest.mark.cluster

HTTP_SERVER: Obj = {
    "command": ["python", "-m", "http.server"],
    "args": ["--bind", "$(POD_IP)", "8000"],
    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    "ports": [{"name": "http", "containerPort": 8000}],
}


def apply_pod(
    cluster: Cluster,
    namespace: str,
    name: str,
    *,
    restart_policy: str = "Always",
    volumes: list[Obj] | None = None,
    node_selector: dict[str, str] | None = None,
    **container: Any,
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": restart_policy,
            "containers": [{"name": "main", "image": "python:3.12-slim", **container}],
            "volumes": volumes or [],
            "nodeSelector": node_selector or {},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))


def ready(pod: Obj) -> bool:
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def phase_is(*phases: str) -> Any:
    return lambda pod: pod["status"].get("phase") in phases


def container_state(pod: Obj) -> Obj:
    statuses = pod["status"].get("containerStatuses") or [{}]
    state: Obj = statuses[0].get("state", {})
    return state


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        status: int = response.status
        return status


def test_an_http_server_pod_becomes_ready_on_its_own_address_and_stops_when_deleted(
    cluster: Cluster, namespace: str
) -> None:
    apply_pod(cluster, namespace, "web", **HTTP_SERVER)

    pod = cluster.wait_for_pod(namespace, "web", ready, what="Ready")

    address = ipaddress.IPv4Address(pod["status"]["podIP"])
    # Pods get 127.0.0.10 and up; below is the control plane's 127.0.0.1.
    assert ipaddress.IPv4Address("127.0.0.10") <= address < ipaddress.IPv4Address("128.0.0.0")
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["podIPs"] == [{"ip": str(address)}]
    assert container_state(pod)["running"]["startedAt"]
    assert get(f"http://{address}:8000/") == 200
    process = procs.ProcessRef.read(cluster.pod_dir(namespace, "web") / "pid")
    assert process is not None and process.alive()

    cluster.kubectl("delete", "pod", "web", "-n", namespace, "--timeout=60s", timeout=70)

    assert not process.alive()
    with pytest.raises(urllib.error.URLError):
        get(f"http://{address}:8000/")


def test_two_pods_get_different_addresses_and_serve_the_same_port(cluster: Cluster, namespace: str) -> None:
    apply_pod(cluster, namespace, "one", **HTTP_SERVER)
    apply_pod(cluster, namespace, "two", **HTTP_SERVER)

    one = cluster.wait_for_pod(namespace, "one", ready, what="Ready")
    two = cluster.wait_for_pod(namespace, "two", ready, what="Ready")

    assert one["status"]["podIP"] != two["status"]["podIP"]
    for pod in (one, two):
        assert get(f"http://{pod['status']['podIP']}:8000/") == 200


def test_an_unpullable_image_shows_image_pull_back_off(cluster: Cluster, namespace: str) -> None:
    apply_pod(cluster, namespace, "unpullable", image="unpullable.invalid/bot:1", command=["true"])

    pod = cluster.wait_for_pod(
        namespace,
        "unpullable",
        lambda p: container_state(p).get("waiting", {}).get("reason") == "ImagePullBackOff",
        what="in ImagePullBackOff",
    )

    assert pod["status"]["phase"] == "Pending"
    assert container_state(pod)["waiting"]["message"].startswith(
        'Back-off pulling image "unpullable.invalid/bot:1": ErrImagePull: '
    )


def test_a_command_exiting_3_under_restart_policy_never_fails_the_pod(cluster: Cluster, namespace: str) -> None:
    apply_pod(cluster, namespace, "exit3", restart_policy="Never", command=["python", "-c", "raise SystemExit(3)"])

    pod = cluster.wait_for_pod(namespace, "exit3", phase_is("Succeeded", "Failed"), what="finished")

    assert pod["status"]["phase"] == "Failed"
    terminated = container_state(pod)["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")


def test_a_crashing_container_is_restarted_with_crash_loop_back_off(cluster: Cluster, namespace: str) -> None:
    apply_pod(cluster, namespace, "crash", command=["python", "-c", "raise SystemExit(1)"])

    pod = cluster.wait_for_pod(
        namespace,
        "crash",
        lambda p: container_state(p).get("waiting", {}).get("reason") == "CrashLoopBackOff",
        what="in CrashLoopBackOff",
    )

    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] >= 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert pod["status"]["phase"] == "Running"


def test_a_command_that_does_not_exist_fails_the_pod_with_start_error(cluster: Cluster, namespace: str) -> None:
    apply_pod(cluster, namespace, "missing", restart_policy="Never", command=["no-such-command"])

    pod = cluster.wait_for_pod(namespace, "missing", phase_is("Succeeded", "Failed"), what="finished")

    assert pod["status"]["phase"] == "Failed"
    terminated = container_state(pod)["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")
    assert 'exec: "no-such-command": executable file not found in $PATH' in terminated["message"]


def test_secrets_and_config_maps_reach_the_process_as_env_vars_and_as_files(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "secret", "generic", "token", "-n", namespace, "--from-literal=token=s3cret")
    cluster.kubectl("create", "configmap", "settings", "-n", namespace, "--from-literal=mode=fast")
    report = (
        "import json, os\n"
        "env = os.environ\n"
        "print(json.dumps({name: env[name] for name in ('TOKEN', 'MODE', 'CFG_mode')}"
        " | {'token file': open(env['BOT_TOKEN_FILE']).read(), 'settings file': open(env['SETTINGS']).read()}))\n"
    )
    apply_pod(
        cluster,
        namespace,
        "config",
        restart_policy="Never",
        command=["python", "-c", report],
        env=[
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "token"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            {"name": "BOT_TOKEN_FILE", "value": "/var/run/secrets/meetingbots.dev/token/token"},
            {"name": "SETTINGS", "value": "/etc/bot/mode"},
        ],
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        volumeMounts=[
            {"name": "token", "mountPath": "/var/run/secrets/meetingbots.dev/token"},
            {"name": "settings", "mountPath": "/etc/bot"},
        ],
        volumes=[
            {"name": "token", "secret": {"secretName": "token"}},
            {"name": "settings", "configMap": {"name": "settings"}},
        ],
    )
    cluster.wait_for_pod(namespace, "config", phase_is("Succeeded"), what="Succeeded")

    seen = json.loads(cluster.kubectl("logs", "config", "-n", namespace).stdout)

    assert seen == {
        "TOKEN": "s3cret",
        "MODE": "fast",
        "CFG_mode": "fast",
        "token file": "s3cret",
        "settings file": "fast",
    }


def test_a_pod_waits_for_a_missing_secret_and_starts_once_it_exists(cluster: Cluster, namespace: str) -> None:
    apply_pod(
        cluster,
        namespace,
        "late",
        restart_policy="Never",
        command=["python", "-c", "import os; print(os.environ['TOKEN'])"],
        env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}],
    )
    pod = cluster.wait_for_pod(
        namespace,
        "late",
        lambda p: container_state(p).get("waiting", {}).get("reason") == "CreateContainerConfigError",
        what="in CreateContainerConfigError",
    )
    assert container_state(pod)["waiting"]["message"] == 'secret "late" not found'

    cluster.kubectl("create", "secret", "generic", "late", "-n", namespace, "--from-literal=token=at last")

    cluster.wait_for_pod(namespace, "late", phase_is("Succeeded"), what="Succeeded")
    assert cluster.kubectl("logs", "late", "-n", namespace).stdout == "at last\n"


def test_a_pod_that_ignores_sigterm_is_killed_after_its_grace_period(cluster: Cluster, namespace: str) -> None:
    stubborn = (
        "import os, signal, socket, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "listener = socket.create_server((os.environ['POD_IP'], 9000))\n"
        "time.sleep(600)\n"
    )
    apply_pod(
        cluster,
        namespace,
        "stubborn",
        command=["python", "-c", stubborn],
        env=[{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        # Ready only once SIGTERM is ignored: the socket opens after that.
        readinessProbe={"tcpSocket": {"port": 9000}, "periodSeconds": 1},
    )
    cluster.wait_for_pod(namespace, "stubborn", ready, what="Ready")
    process = procs.ProcessRef.read(cluster.pod_dir(namespace, "stubborn") / "pid")
    assert process is not None

    started = time.monotonic()
    cluster.kubectl("delete", "pod", "stubborn", "-n", namespace, "--grace-period=3", "--timeout=30s", timeout=40)

    assert time.monotonic() - started >= 3
    assert not process.alive()


def test_a_pod_whose_node_selector_matches_no_node_is_unschedulable(cluster: Cluster, namespace: str) -> None:
    apply_pod(cluster, namespace, "picky", node_selector={"disktype": "ssd"}, command=["sleep", "600"])

    pod = cluster.wait_for_pod(
        namespace,
        "picky",
        lambda p: any(
            (c["type"], c["status"], c.get("reason")) == ("PodScheduled", "False", "Unschedulable")
            for c in p["status"].get("conditions", [])
        ),
        what="Unschedulable",
    )

    assert pod["status"]["phase"] == "Pending"
    assert "nodeName" not in pod["spec"]


def test_command_and_args_expand_variables_and_the_output_reaches_kubectl_logs(
    cluster: Cluster, namespace: str
) -> None:
    apply_pod(
        cluster,
        namespace,
        "expand",
        restart_policy="Never",
        command=["python", "-c", "import sys; print(sys.argv[1:])"],
        args=["$(GREETING)", "$$(GREETING)", "$(UNDEFINED)"],
        env=[{"name": "GREETING", "value": "hello"}],
    )
    cluster.wait_for_pod(namespace, "expand", phase_is("Succeeded"), what="Succeeded")

    logs = cluster.kubectl("logs", "expand", "-n", namespace).stdout

    assert logs == "['hello', '$(GREETING)', '$(UNDEFINED)']\n"
