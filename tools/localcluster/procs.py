"""Pid files and process-group signalling shared by the launcher and the kubelet; one process at a time.

Every process the local cluster starts (control-plane components and Pod
processes) leads its own process group (`start_new_session`), so signalling the
group reaches its children too, and a shell's Ctrl-C never reaches the cluster.

A pid file holds `<pid> <start time>`: the start time (field 22 of
/proc/<pid>/stat) tells a live process of ours from an unrelated process that
got the same pid after a crash. The group is signalled when its leader is
verified, or when no process holds the pid any more: while any member of our
group lives, Linux never hands that pid to a new process, so the group can only
be ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from localcluster.waiting import until

# Set by the kubelet in every Pod process's environment to its Pod directory.
POD_MARKER_VAR: Final = "LOCALCLUSTER_POD_DIR"


@dataclass(frozen=True)
class ProcessRef:
    pid: int
    start_time: str

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        start_time = _start_time(pid)
        return cls(pid, start_time) if start_time is not None else None

    @classmethod
    def read(cls, path: Path) -> ProcessRef | None:
        try:
            pid, start_time = path.read_text().split()
            return cls(int(pid), start_time)
        except (OSError, ValueError):
            return None

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{self.pid} {self.start_time}\n")
        tmp.replace(path)

    def alive(self) -> bool:
        """The very process we started exists and is not a zombie."""
        return _start_time(self.pid) == self.start_time and _state(self.pid) not in ("Z", "X")

    def group_may_be_ours(self) -> bool:
        """The pid is free, or still held by our process (perhaps a zombie)."""
        return _start_time(self.pid) in (None, self.start_time)

    def signal_group(self, sig: signal.Signals) -> None:
        if not self.group_may_be_ours():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


def start_leader(
    argv: list[str], *, output: IO[bytes], cwd: Path, env: dict[str, str] | None
) -> subprocess.Popen[bytes]:
    """`argv` started as the leader of a process group of its own, stdin closed, stdout and stderr to `output`."""
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )


@contextlib.contextmanager
def exclusive(lock_path: Path, *, on_wait: Callable[[], None]) -> Iterator[None]:
    """Held by this process alone (an flock on `lock_path`); `on_wait()` first if another holds it."""
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses.
    return stat[stat.rindex(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _live_groups() -> set[int]:
    """Ids of the process groups with a member that is not a zombie."""
    groups = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and fields[0] not in ("Z", "X"):
                groups.add(int(fields[2]))
    return groups


def _wait_groups_gone(refs: list[ProcessRef], timeout: float) -> list[ProcessRef]:
    """Those of `refs` whose group still lives after `timeout` seconds."""
    remaining = [r for r in refs if r.group_may_be_ours()]

    def gone() -> bool:
        nonlocal remaining
        live = _live_groups()
        remaining = [r for r in remaining if r.pid in live and r.group_may_be_ours()]
        return not remaining

    with contextlib.suppress(TimeoutError):
        until(gone, timeout=timeout, interval=0.05)
    return remaining


def stop_groups(refs: list[ProcessRef], *, grace: float) -> None:
    """SIGTERM each group, wait up to `grace` seconds, then SIGKILL what is left."""
    for ref in refs:
        ref.signal_group(signal.SIGTERM)
    for ref in _wait_groups_gone(refs, grace):
        ref.signal_group(signal.SIGKILL)
    _wait_groups_gone(refs, 5)


def wait_reaped(refs: list[ProcessRef], *, timeout: float) -> None:
    """Wait until dead processes have been reaped by their new parent (init).

    They are not our children, so we cannot reap them; until init does,
    `pgrep` lists them as <defunct>, which looks like a leak.
    """
    with contextlib.suppress(TimeoutError):
        until(lambda: not any(_start_time(r.pid) == r.start_time for r in refs), timeout=timeout, interval=0.05)


def marked_processes(marker: str) -> list[int]:
    """Pids whose environment has `marker` (a `NAME=value-prefix`) in it.

    The backstop for Pod processes whose pid file is gone: the kubelet puts a
    marker into every Pod process's environment, and children inherit it.
    """
    needle = b"\0" + marker.encode()

    def marked(pid: int) -> bool:
        return needle in b"\0" + Path(f"/proc/{pid}/environ").read_bytes()

    return _scan(marked)


def component_processes(names: tuple[str, ...], fragment: str) -> list[int]:
    """Pids of programs called one of `names` whose arguments contain `fragment`.

    The backstop for control-plane components whose pid file is gone; the
    fragment (the cluster directory) keeps other clusters' components and
    anyone's `tail -f .cluster/logs/...` out.
    """

    def matches(pid: int) -> bool:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return fragment.encode() in b" ".join(argv) and any(
            Path(arg.decode(errors="replace")).name in names for arg in argv[:3]
        )

    return _scan(matches)


def _scan(predicate: Callable[[int], bool]) -> list[int]:
    """Live pids satisfying `predicate`, never this process or its ancestors."""
    excluded = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in excluded:
            continue
        try:
            if predicate(int(entry.name)) and _state(int(entry.name)) not in ("Z", "X", None):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _ancestors() -> set[int]:
    pids = set()
    pid = os.getpid()
    while pid > 1:
        pids.add(pid)
        fields = _stat_fields(pid)
        if not fields:
            break
        pid = int(fields[1])
    return pids
