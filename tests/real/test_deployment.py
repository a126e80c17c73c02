"""The operator as `make deploy` installs it, on a real node: its own image, its ServiceAccount,
the restricted security context and the read-only root filesystem as the container runtime
enforces them, and its admission webhook reached by the API server through its Service.
"""

from __future__ import annotations

import json

import pytest

from localcluster.bots import soon
from localcluster.testing import Cluster
from realnode import configs

from .conftest import OPERATOR_NAMESPACE, Bots, Operator

pytestmark = pytest.mark.real_node

PROBE = """
import json, os
try:
    open("/written-by-the-test", "w")
    root_fs = "writable"
except OSError as error:
    root_fs = error.strerror
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "root_fs": root_fs,
    "cap_eff": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
    "seccomp": status["Seccomp"].strip(),
    "token": os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"),
}))
"""


def test_the_operator_runs_from_its_image_as_its_service_account_restricted_and_read_only(
    real: Cluster, operator: Operator
) -> None:
    pods = operator.running_pods()
    assert len(pods) == 2, "two replicas: a leader and a hot standby"
    for pod in pods:
        assert pod["spec"]["serviceAccountName"] == "scheduledbot-operator"
        [container] = pod["status"]["containerStatuses"]
        assert container["image"] == configs.OPERATOR_IMAGE and container["ready"] is True
        assert container["imageID"], "the runtime reports the image it runs"
    pod = pods[0]
    namespace = json.loads(real.kubectl("get", "namespace", OPERATOR_NAMESPACE, "-o", "json").stdout)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    # What the container runtime enforces, seen from inside the operator's container.
    seen = json.loads(
        real.kubectl("exec", "-n", OPERATOR_NAMESPACE, pod["metadata"]["name"], "--", "python", "-c", PROBE).stdout
    )
    assert seen == {
        "uid": 10001,
        "gid": 10001,
        "root_fs": "Read-only file system",
        "cap_eff": "0000000000000000",
        "no_new_privs": "1",
        "seccomp": "2",  # filter mode: the runtime's default profile
        "token": True,  # its own API credentials
    }


def test_the_webhook_is_reached_through_its_service_by_the_api_server(
    real: Cluster, operator: Operator, bots: Bots
) -> None:
    config = json.loads(
        real.kubectl("get", "validatingwebhookconfiguration", "scheduledbot-operator", "-o", "json").stdout
    )
    # Three webhooks (plain specs, specs with an inline Pod template, BotSchedules), all through the one Service.
    webhooks = config["webhooks"]
    assert {w["name"] for w in webhooks} == {
        "validate.scheduledbots.meetingbots.dev",
        "templates.scheduledbots.meetingbots.dev",
        "validate.botschedules.meetingbots.dev",
    }
    for webhook in webhooks:
        assert webhook["clientConfig"]["service"]["namespace"] == OPERATOR_NAMESPACE
        assert webhook["clientConfig"]["service"]["name"] == "scheduledbot-webhook"
    slices = json.loads(
        real.kubectl(
            "get",
            "endpointslices",
            "-n",
            OPERATOR_NAMESPACE,
            "-l",
            "kubernetes.io/service-name=scheduledbot-webhook",
            "-o",
            "json",
        ).stdout
    )
    addresses = {a for s in slices["items"] for e in s.get("endpoints") or [] for a in e["addresses"]}
    assert addresses == {p["status"]["podIP"] for p in operator.running_pods()}, "both replicas serve the webhook"

    past = bots.manifest("too-late", join_at=soon(-3600), lead=None)
    result = real.kubectl("apply", "-f", "-", input=json.dumps(past), check=False)
    assert result.returncode != 0
    assert 'admission webhook "validate.scheduledbots.meetingbots.dev" denied the request' in result.stderr, (
        result.stderr
    )
    assert "spec.joinAt cannot be in the past" in result.stderr, result.stderr
