"""The real node's fixed names and addresses, and pure builders of its components' configuration.

Everything the node puts on the host carries a project-specific name or address,
so that it is recognisable and can be removed: the bridge `sbrn0`, the subnet
10.213.0.0/24 (the node's own address is the bridge's, 10.213.0.1), the cgroup
`scheduledbot-realnode`, the iptables chains `SCHEDULEDBOT-NODE`.

Why the Pods get no default route: the only places a Pod needs to reach are on
this machine (the node's address, where the API server, the kubelet and the
meeting server of the tests listen, and the `kubernetes` Service, translated to
the API server on the node). Without a default route and with `isGateway` off,
the bridge plugin does not turn on ip_forward, and nothing a Pod sends can be
routed anywhere else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from localcluster import pki

BRIDGE: Final = "sbrn0"
SUBNET: Final = "10.213.0.0/24"
NODE_IP: Final = "10.213.0.1"
POD_RANGE: Final = ("10.213.0.10", "10.213.0.250")
NODE_NAME: Final = "real-node"
CNI_NETWORK: Final = "scheduledbot-realnode"
CGROUP: Final = "scheduledbot-realnode"
#: Where the node's own processes (containerd, its shims, the kubelet) run; Pods go to kubepods beside it.
NODE_CGROUP: Final = f"{CGROUP}/node"
CHAIN: Final = "SCHEDULEDBOT-NODE"
PAUSE_IMAGE: Final = "localhost/scheduledbot-pause:1"
#: Where the project image is imported into the node (`make image`).
OPERATOR_IMAGE: Final = "localhost/scheduledbot-operator:dev"
#: Paths used whatever the configuration says: by containerd 1.6 (shim sockets, fifos, the
#: CNI cache) and by the kubelet (its device plugin socket, /var/lib/kubelet/device-plugins,
#: whatever --root-dir is; the links to container logs, /var/log/containers, whatever
#: podLogsDir is). The node's mount namespace binds a directory of its own over each.
#: /run/mount: libmount's utab directory, made when the kubelet mounts a Secret volume.
HOST_PATHS: Final = ("/run/containerd", "/var/lib/cni", "/var/lib/kubelet", "/var/log/containers", "/run/mount")


def _toml_string(value: str | Path) -> str:
    # A TOML basic string is a JSON string for everything a path can hold here.
    return json.dumps(str(value))


def containerd_config(*, root: Path, state: Path, socket: Path, runc_root: Path, cni_conf_dir: Path) -> str:
    """containerd's config.toml (version 2): every path under the node's directory."""
    q = _toml_string
    return f"""\
version = 2
root = {q(root)}
state = {q(state)}
# The opt plugin installs into /opt/containerd; tracing and the unused snapshotters are not needed.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = {q(socket)}

[ttrpc]
  address = ""

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = {q(PAUSE_IMAGE)}
    # The capability bounding set of some VMs lacks CAP_SYS_RESOURCE: runc cannot
    # lower a sandbox's oom_score_adj below containerd's own, and every sandbox fails
    # with "can't get final child's PID from pipe: EOF" unless this is set.
    restrict_oom_score_adj = true
    # Pod network namespaces are bind-mounted under the state directory, not /var/run/netns.
    netns_mounts_under_state_dir = true
    enable_selinux = false
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = {q(cni_conf_dir)}
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = {q(runc_root)}
"""


def cni_conflist(*, ipam_dir: Path) -> dict[str, Any]:
    """One bridge network; containerd adds the loopback interface itself."""
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                # The bridge already holds the node's address; a gateway would also
                # switch on ip_forward host-wide, which nothing here needs.
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [
                        [
                            {
                                "subnet": SUBNET,
                                "rangeStart": POD_RANGE[0],
                                "rangeEnd": POD_RANGE[1],
                                "gateway": NODE_IP,
                            }
                        ]
                    ],
                    # The Service range only (the `kubernetes` Service), through the node.
                    "routes": [{"dst": pki.SERVICE_CLUSTER_IP_RANGE}],
                },
            }
        ],
    }


def kubelet_config(
    *,
    port: int,
    healthz_port: int,
    socket: Path,
    pod_logs_dir: Path,
    ca_cert: Path,
    tls_cert: Path,
    tls_key: Path,
) -> dict[str, Any]:
    """The kubelet's KubeletConfiguration."""
    endpoint = f"unix://{socket}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(tls_cert),
        "tlsPrivateKeyFile": str(tls_key),
        "containerRuntimeEndpoint": endpoint,
        "imageServiceEndpoint": endpoint,
        "cgroupDriver": "cgroupfs",
        # Every Pod's cgroup under the node's own, so that `down` finds and removes them all.
        "cgroupRoot": f"/{CGROUP}",
        # cgroup v1 is deprecated, not gone; some VMs still boot with it.
        "failCgroupV1": False,
        "failSwapOn": False,
        "podLogsDir": str(pod_logs_dir),
        # No cluster DNS here, and no Pod may resolve (or reach) anything off this machine.
        "resolvConf": "",
        "clusterDomain": "cluster.local",
        # The images are imported, not pulled: nothing may garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # A shared development machine's disk may be fuller than a node's would be.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "serializeImagePulls": False,
        "maxPods": 110,
    }
