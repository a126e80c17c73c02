"""The real node's configuration builders and host bookkeeping, without a node: what containerd,
the CNI plugin and the kubelet are told, and how two pictures of the host are compared.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

from localcluster import pki
from realnode import configs, host


def test_containerd_keeps_everything_under_the_nodes_directory_and_survives_a_restricted_vm() -> None:
    text = configs.containerd_config(
        root=Path("/n/containerd"),
        state=Path("/n/state"),
        socket=Path('/n/run/a "quoted" dir/containerd.sock'),
        runc_root=Path("/n/runc"),
        cni_conf_dir=Path("/n/cni"),
    )
    config = tomllib.loads(text)
    assert (config["root"], config["state"]) == ("/n/containerd", "/n/state")
    assert config["grpc"]["address"] == '/n/run/a "quoted" dir/containerd.sock'
    assert "io.containerd.internal.v1.opt" in config["disabled_plugins"]  # it installs into /opt
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["sandbox_image"] == configs.PAUSE_IMAGE
    assert cri["cni"]["conf_dir"] == "/n/cni"
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["options"] == {"SystemdCgroup": False, "Root": "/n/runc"}


def test_pods_reach_only_this_machine_and_forwarding_stays_off() -> None:
    [bridge] = configs.cni_conflist(ipam_dir=Path("/n/ipam"))["plugins"]
    assert bridge["bridge"] == configs.BRIDGE
    assert bridge["isGateway"] is False and bridge["ipMasq"] is False
    ipam = bridge["ipam"]
    assert ipam["dataDir"] == "/n/ipam"
    assert ipam["routes"] == [{"dst": pki.SERVICE_CLUSTER_IP_RANGE}], "no default route"
    [[pod_range]] = ipam["ranges"]
    subnet = ipaddress.ip_network(pod_range["subnet"])
    assert ipaddress.ip_address(configs.NODE_IP) in subnet
    assert pod_range["gateway"] == configs.NODE_IP
    assert all(ipaddress.ip_address(a) in subnet for a in configs.POD_RANGE)
    assert ipaddress.IPv4Address(configs.NODE_IP) < ipaddress.IPv4Address(configs.POD_RANGE[0])


def test_the_kubelet_runs_pods_under_the_nodes_cgroup_with_imported_images_kept() -> None:
    config = configs.kubelet_config(
        port=10250,
        healthz_port=10248,
        socket=Path("/n/containerd.sock"),
        pod_logs_dir=Path("/n/logs"),
        ca_cert=Path("/p/ca.crt"),
        tls_cert=Path("/p/k.crt"),
        tls_key=Path("/p/k.key"),
    )
    assert config["cgroupRoot"] == f"/{configs.CGROUP}"
    assert configs.NODE_CGROUP.startswith(f"{configs.CGROUP}/")
    assert config["failCgroupV1"] is False
    assert config["containerRuntimeEndpoint"] == "unix:///n/containerd.sock"
    assert config["address"] == configs.NODE_IP
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["imageGCHighThresholdPercent"] == 100
    assert config["resolvConf"] == ""


def test_differences_name_what_changed_and_nothing_else() -> None:
    before = {
        "links": ["eth0", "lo"],
        "sysctls": {"kernel/panic": "1", "vm/overcommit_memory": "0"},
        "iptables": {"ipv4": {"filter": ["INPUT"]}},
        "paths": {"/run/containerd": False},
    }
    after = {
        "links": ["eth0", "lo", "sbrn0"],
        "sysctls": {"kernel/panic": "10", "vm/overcommit_memory": "0"},
        "iptables": {"ipv4": {"filter": ["INPUT", "KUBE-FIREWALL"]}},
        "paths": {"/run/containerd": False},
    }
    assert host.differences(before, before) == []
    assert sorted(host.differences(before, after)) == [
        "iptables ipv4 filter: new KUBE-FIREWALL",
        "links: new sbrn0",
        "sysctls kernel/panic: '1' -> '10'",
    ]


def test_iptables_rules_are_split_as_a_shell_would_for_deletion() -> None:
    line = '-A PREROUTING -i sbrn0 -m comment --comment "scheduledbot real node" -j SCHEDULEDBOT-NODE'
    assert host.split_rule(line) == [
        "-A",
        "PREROUTING",
        "-i",
        "sbrn0",
        "-m",
        "comment",
        "--comment",
        "scheduledbot real node",
        "-j",
        "SCHEDULEDBOT-NODE",
    ]


def test_the_sysctls_restored_are_the_kubelets_tunables_and_forwarding() -> None:
    assert {"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/ip_forward"} <= set(
        host.NODE_SYSCTLS
    )
