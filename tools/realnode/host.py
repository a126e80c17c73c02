"""What the real node changes on the host, how it is undone, and how to tell that it was.

A real kubelet and containerd are not polite guests: the kubelet sets six kernel
tunables (vm.overcommit_memory, vm.panic_on_oom, kernel.panic, kernel.panic_on_oops,
kernel.keys.root_maxkeys, kernel.keys.root_maxbytes) and adds iptables chains
(KUBE-FIREWALL with jumps from INPUT and OUTPUT, KUBE-IPTABLES-HINT,
KUBE-KUBELET-CANARY) for IPv4 and IPv6; containerd 1.6 writes under
/run/containerd and /var/lib/cni, and the kubelet under /var/lib/kubelet and
/var/log/containers,
whatever their configuration says; every Pod is
a network namespace, a veth pair on the bridge, overlay and tmpfs mounts and
cgroups. The node keeps them contained (a private mount namespace, one cgroup
tree, one bridge) and `down` removes the rest, using the state of the host
recorded before `up` touched anything (`capture`): what was there before stays.

`differences` compares two captures; the teardown test and `down` itself use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from realnode.configs import BRIDGE, CGROUP, CHAIN, HOST_PATHS, NODE_IP, SUBNET

#: Host-wide sysctls the node may change (the kubelet's tunables; forwarding, which
#: nothing here enables, in case a CNI plugin does): restored by `down` to their
#: recorded values.
NODE_SYSCTLS: Final = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv6/conf/all/forwarding",
)
#: Counters and random values that change by themselves.
_VOLATILE_SYSCTLS: Final = re.compile(
    r"^(fs/(dentry-state|file-nr|inode-nr|inode-state|aio-nr)|kernel/(ns_last_pid|random/.*|pty/nr)"
    r"|net/netfilter/nf_conntrack_count|fs/quota/.*)$"
)
_KUBELET_CHAINS: Final = {
    "filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"),
    "nat": ("KUBE-KUBELET-CANARY",),
    "mangle": ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"),
}
_CGROUP_FS: Final = Path("/sys/fs/cgroup")
PATHS_WATCHED: Final = (*HOST_PATHS, "/run/netns", "/var/lib/containerd", "/etc/cni", "/opt/cni", "/opt/containerd")
#: Where daemons leave state behind; their entries are compared (a new /var/lib/kubelet, /run/xtables.lock...).
DIRECTORIES_WATCHED: Final = ("/run", "/var/lib", "/etc", "/opt", "/var/log")


class HostError(RuntimeError):
    pass


def run(*argv: str, check: bool = True, timeout: float = 60) -> str:
    """stdout of a command; unless `check`, nothing when it fails or is not installed."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as error:
        if check:
            raise HostError(f"`{argv[0]}` is not installed (`make real-deps`)") from error
        return ""
    if check and result.returncode != 0:
        raise HostError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


# --- sysctls --------------------------------------------------------------------------------


def read_sysctls() -> dict[str, str]:
    """Every readable sysctl but the volatile ones, by path under /proc/sys."""
    values: dict[str, str] = {}
    root = Path("/proc/sys")
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            key = str(path.relative_to(root))
            if _VOLATILE_SYSCTLS.match(key):
                continue
            try:
                values[key] = " ".join(path.read_text().split())
            except OSError:
                continue  # write-only, or refused
    return values


def restore_sysctls(found: dict[str, str]) -> list[str]:
    """Set back the node's sysctls that differ from `found`; what was restored."""
    restored = []
    for key in NODE_SYSCTLS:
        path = Path("/proc/sys", key)
        if key not in found or not path.exists():
            continue
        now = " ".join(path.read_text().split())
        if now != found[key]:
            path.write_text(found[key])
            restored.append(f"{key.replace('/', '.')} {now} -> {found[key]}")
    return restored


# --- network ----------------------------------------------------------------------------------


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def create_bridge() -> None:
    """The Pods' bridge, holding the node's own address (the CNI plugin attaches Pods to it)."""
    if not link_exists(BRIDGE):
        run("ip", "link", "add", BRIDGE, "type", "bridge")
    # No IPv6 on the Pod network: no router advertisements, no link-local chatter.
    Path(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6").write_text("1")
    prefix = SUBNET.split("/")[1]
    run("ip", "addr", "replace", f"{NODE_IP}/{prefix}", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")


def delete_bridge(*, timeout: float = 15) -> None:
    """Once the Pods' veths are gone (the kernel removes them with their network namespaces,
    asynchronously, after the last process in them died), the bridge."""
    ports = Path("/sys/class/net", BRIDGE, "brif")
    deadline = time.monotonic() + timeout
    while ports.is_dir() and any(ports.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if link_exists(BRIDGE):
        run("ip", "link", "delete", BRIDGE)


def _iptables(family: str) -> str:
    return "ip6tables" if family == "ipv6" else "iptables"


def iptables_chains() -> dict[str, dict[str, list[str]]]:
    """family -> table -> chain names, as iptables-save shows them (no tables: nothing)."""
    chains: dict[str, dict[str, list[str]]] = {}
    for family in ("ipv4", "ipv6"):
        table = ""
        tables: dict[str, list[str]] = {}
        for line in run(f"{_iptables(family)}-save", check=False).splitlines():
            if line.startswith("*"):
                table = line[1:]
                tables[table] = []
            elif line.startswith(":"):
                tables[table].append(line[1:].split()[0])
        chains[family] = tables
    return chains


def install_rules(api_port: int) -> None:
    """The `kubernetes` Service for Pods (to the API server on the node), and no forwarding."""
    remove_rules()
    ipt = _iptables("ipv4")
    comment = ["-m", "comment", "--comment", "scheduledbot real node"]
    run(ipt, "-t", "nat", "-N", CHAIN)
    run(
        ipt,
        "-t",
        "nat",
        "-A",
        CHAIN,
        "-d",
        "10.0.0.1/32",
        "-p",
        "tcp",
        "--dport",
        "443",
        *comment,
        "-j",
        "DNAT",
        "--to-destination",
        f"{NODE_IP}:{api_port}",
    )
    run(ipt, "-t", "nat", "-I", "PREROUTING", "-i", BRIDGE, *comment, "-j", CHAIN)
    # Nothing from or to the Pod network is ever routed elsewhere, whoever enables ip_forward.
    run(ipt, "-t", "filter", "-N", CHAIN)
    run(ipt, "-t", "filter", "-A", CHAIN, *comment, "-j", "DROP")
    run(ipt, "-t", "filter", "-I", "FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, *comment, "-j", CHAIN)
    run(ipt, "-t", "filter", "-I", "FORWARD", "!", "-i", BRIDGE, "-o", BRIDGE, *comment, "-j", CHAIN)


def _delete_chain(family: str, table: str, chain: str) -> None:
    """Remove every jump to `chain` in `table`, then the chain."""
    ipt = _iptables(family)
    for line in run(ipt, "-t", table, "-S", check=False).splitlines():
        words = split_rule(line)
        jumps = any(words[i : i + 2] == ["-j", chain] for i in range(len(words)))
        if words[:1] == ["-A"] and words[1] != chain and jumps:
            run(ipt, "-t", table, "-D", *words[1:], check=False)
    run(ipt, "-t", table, "-F", chain, check=False)
    run(ipt, "-t", table, "-X", chain, check=False)


def split_rule(line: str) -> list[str]:
    """iptables -S output split as the shell would (comments are double-quoted)."""
    return [m.group(1) if m.group(1) is not None else m.group(2) for m in re.finditer(r'"([^"]*)"|(\S+)', line)]


def remove_rules() -> None:
    """The node's own chains (safe to call when they are absent)."""
    present = iptables_chains().get("ipv4", {})
    for table in ("nat", "filter"):
        if CHAIN in present.get(table, []):
            _delete_chain("ipv4", table, CHAIN)


def remove_kubelet_chains(found: dict[str, dict[str, list[str]]]) -> list[str]:
    """The kubelet's chains that were not there before, and then tables left empty that were not either."""
    removed = []
    now = iptables_chains()
    for family, tables in now.items():
        for table, chains in tables.items():
            for chain in _KUBELET_CHAINS.get(table, ()):
                if chain in chains and chain not in found.get(family, {}).get(table, []):
                    _delete_chain(family, table, chain)
                    removed.append(f"{family} {table} {chain}")
    # iptables-nft leaves the tables it created (with their empty built-in chains) behind.
    for family, tables in iptables_chains().items():
        for table in tables:
            if table not in found.get(family, {}) and _table_is_empty(family, table):
                run("nft", "delete", "table", "ip6" if family == "ipv6" else "ip", table, check=False)
                removed.append(f"{family} table {table}")
    return removed


def _table_is_empty(family: str, table: str) -> bool:
    lines = run(_iptables(family), "-t", table, "-S", check=False).splitlines()
    return all(line.startswith("-P ") and line.endswith(" ACCEPT") for line in lines)


# --- cgroups ------------------------------------------------------------------------------------


def hierarchies() -> list[Path]:
    """Mount points of the cgroup hierarchies (v1 controllers and named ones, or the v2 root)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            found.append(Path(left.split()[4]))
    return found


def create_cgroup(relative: str) -> None:
    for hierarchy in hierarchies():
        path = hierarchy
        for part in relative.split("/"):
            parent, path = path, path / part
            if not path.exists():
                path.mkdir()
            # A v1 cpuset starts empty, and no process can join an empty cpuset.
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (path / name).exists() and not (path / name).read_text().strip():
                    (path / name).write_text((parent / name).read_text())


def _cgroup_dirs(relative: str) -> Iterator[Path]:
    """Every directory of the tree in every hierarchy, deepest first."""
    for hierarchy in hierarchies():
        top = hierarchy / relative
        if top.is_dir():
            for dirpath, _dirs, _files in os.walk(top, topdown=False):
                yield Path(dirpath)


def cgroup_pids(relative: str = CGROUP) -> set[int]:
    pids: set[int] = set()
    for directory in _cgroup_dirs(relative):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
    return pids


def kill_cgroup(relative: str = CGROUP, *, timeout: float = 20) -> None:
    """SIGKILL every process in the tree, frozen first so that none can fork away."""
    freezer = _CGROUP_FS / "freezer" / relative / "freezer.state"
    deadline = time.monotonic() + timeout
    while pids := cgroup_pids(relative):
        if time.monotonic() > deadline:
            raise HostError(f"processes of cgroup {relative} survive SIGKILL: {sorted(pids)}")
        frozen = freezer.exists()
        if frozen:
            freezer.write_text("FROZEN")
        for pid in cgroup_pids(relative):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if frozen:
            freezer.write_text("THAWED")
        time.sleep(0.1)


def remove_cgroup(relative: str = CGROUP) -> None:
    for directory in _cgroup_dirs(relative):
        with contextlib.suppress(FileNotFoundError):
            directory.rmdir()


# --- a picture of the host --------------------------------------------------------------------


def capture_mounts() -> list[str]:
    """`<mount point> <type>` of every mount the host's mount namespace shows."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        mounts.append(f"{fields[4]} {right.split()[0]}")
    return sorted(mounts)


def _processes(markers: tuple[str, ...]) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cgroups = (entry / "cgroup").read_text()
        except OSError:
            continue
        if f"/{CGROUP}" in cgroups or any(m in cmdline for m in markers):
            found.append(f"{entry.name} {cmdline[:200]}")
    return sorted(found)


def capture(markers: tuple[str, ...] = ()) -> dict[str, Any]:
    """What the node may change, as plain data (JSON-ready).

    `markers`: strings whose presence in a command line makes a process one of the
    node's (its directory).
    """
    return {
        "links": sorted(p.name for p in Path("/sys/class/net").iterdir()),
        "addresses": sorted(
            f"{a['ifname']} {i['local']}/{i['prefixlen']}"
            for a in json.loads(run("ip", "-j", "addr", "show") or "[]")
            for i in a.get("addr_info", [])
        ),
        "routes": sorted(
            json.dumps(r, sort_keys=True) for r in json.loads(run("ip", "-j", "route", "show", "table", "all") or "[]")
        ),
        "mounts": capture_mounts(),
        "iptables": {
            family: {table: sorted(chains) for table, chains in tables.items()}
            for family, tables in iptables_chains().items()
        },
        "iptables_rules": {
            family: sorted(
                line for line in run(f"{_iptables(family)}-save", check=False).splitlines() if line.startswith("-A ")
            )
            for family in ("ipv4", "ipv6")
        },
        "sysctls": read_sysctls(),
        "paths": {p: os.path.lexists(p) for p in PATHS_WATCHED},
        "entries": {d: sorted(os.listdir(d)) for d in DIRECTORIES_WATCHED if os.path.isdir(d)},
        "cgroups": sorted(str(h / CGROUP) for h in hierarchies() if (h / CGROUP).exists()),
        "processes": _processes(markers),
    }


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Human-readable differences between two captures (empty: the host is as it was)."""
    found = []
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            flat_old, flat_new = _flatten(old), _flatten(new)
            for sub in sorted(flat_old.keys() | flat_new.keys()):
                a, b = flat_old.get(sub), flat_new.get(sub)
                if a == b:
                    continue
                if isinstance(a, list) and isinstance(b, list):
                    found += [f"{key} {sub}: gone {item}" for item in a if item not in b]
                    found += [f"{key} {sub}: new {item}" for item in b if item not in a]
                else:
                    found.append(f"{key} {sub}: {a!r} -> {b!r}")
        elif isinstance(old, list) and isinstance(new, list):
            found += [f"{key}: gone {item}" for item in old if item not in new]
            found += [f"{key}: new {item}" for item in new if item not in old]
        else:
            found.append(f"{key}: {old!r} -> {new!r}")
    return found


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            flat.update(_flatten(item, f"{prefix}{key} "))
        else:
            flat[f"{prefix}{key}"] = item
    return flat
