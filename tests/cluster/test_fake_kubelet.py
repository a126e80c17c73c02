"""Pods on the fake kubelet behave, through the API, like Pods on a real node."""

from __future__ import annotations

import ipaddress
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


def test_a_secret_reaches_the_process_as_env_var_and_as_volume_file(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "secret", "generic", "token", "-n", namespace, "--from-literal=token=s3cret")
    check = (
        "import os, sys\n"
        "from_file = open(os.environ['BOT_TOKEN_FILE']).read()\n"
        "sys.exit(0 if from_file == os.environ['TOKEN'] == 's3cret' else 4)\n"
    )
    apply_pod(
        cluster,
        namespace,
        "secret",
        restart_policy="Never",
        command=["python", "-c", check],
        env=[
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "token"}}},
            {"name": "BOT_TOKEN_FILE", "value": "/var/run/secrets/meetingbots.dev/token/token"},
        ],
        volumeMounts=[{"name": "token", "mountPath": "/var/run/secrets/meetingbots.dev/token"}],
        volumes=[{"name": "token", "secret": {"secretName": "token"}}],
    )

    pod = cluster.wait_for_pod(namespace, "secret", phase_is("Succeeded", "Failed"), what="finished")

    assert container_state(pod)["terminated"]["exitCode"] == 0


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
