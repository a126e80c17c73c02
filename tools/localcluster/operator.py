"""The operator as users run it, in a process of its own: for the tests, the benchmark and the demo.

`python -m scheduledbot.runtime.main` against a kubeconfig, leading its own process
group, with its output appended to a log file. Every start picks free loopback ports
for /healthz, /metrics and the webhook, so several instances (two replicas of one
namespace, or tests side by side) never collide. The harness can do to it what a node
does to a Pod: kill it (SIGKILL, no cleanup), stop it (SIGTERM, then SIGKILL after a
grace period), freeze and thaw it (SIGSTOP/SIGCONT), and start it again.

`stop()` leaves the clean-up to the operator (it deletes its own webhook
configuration), so tests can check that it does; `close()` then removes what a kill
left behind.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from localcluster import procs
from localcluster.cluster import REPO_ROOT
from localcluster.kubectl import KubectlError, kubectl
from localcluster.net import free_ports
from localcluster.waiting import until

#: A series' labels, sorted by name: `(("state", "ended"),)`.
Labels = tuple[tuple[str, str], ...]


def default_webhook_config(namespaces: Sequence[str]) -> str:
    """The ValidatingWebhookConfiguration name of an instance watching `namespaces`."""
    return "scheduledbot-" + ("-".join(namespaces) if namespaces else "all-namespaces")


@dataclass(frozen=True)
class Metrics:
    """One scrape of /metrics: sample name -> labels -> value."""

    samples: Mapping[str, Mapping[Labels, float]]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples: dict[str, dict[Labels, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return cls(samples)

    def get(self, name: str, **labels: str) -> float | None:
        """The value of the series with exactly these labels; None when it has not been exported."""
        return self.samples.get(name, {}).get(tuple(sorted(labels.items())))

    def series(self, name: str) -> Mapping[Labels, float]:
        """Every series of a sample name (say, a histogram's `_bucket`s by `le`)."""
        return self.samples.get(name, {})

    def total(self, name: str) -> float:
        """The sum over all label values (0 when none was exported)."""
        return sum(self.series(name).values())


@dataclass
class OperatorProcess:
    """One operator instance; `start()`, then signal it, scrape it, read its log; `close()` at the end."""

    kubeconfig: Path
    namespaces: Sequence[str]
    log_path: Path
    extra_meeting_hosts: Sequence[str] = ()
    webhook: bool = True
    #: Default: one name per set of namespaces, so two instances of one namespace share
    #: it (the later one's certificate wins, as in a rolling update); give distinct names
    #: to have both registered.
    webhook_config: str = ""
    log_level: str = "INFO"
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    #: The interpreter, and with it the installed packages (the image's alone, say: bench/).
    python: str = sys.executable
    #: For what the harness itself reads and deletes (the webhook configuration); default
    #: `kubeconfig`, which may lack the rights (a ServiceAccount's, say).
    admin_kubeconfig: Path | None = None
    health_port: int = field(default=0, init=False)
    metrics_port: int = field(default=0, init=False)
    webhook_port: int = field(default=0, init=False)
    #: Wall-clock time of the latest start (to compare with API and meeting timestamps).
    started_at: float = field(default=0.0, init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _started: float = field(default=0.0, init=False, repr=False)
    _webhook_ports: set[int] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.webhook_config:
            self.webhook_config = default_webhook_config(self.namespaces)

    # --- life cycle -------------------------------------------------------------------

    def python_options(self) -> list[str]:
        """Interpreter options before `-m scheduledbot.runtime.main` (a profiler, for one)."""
        return []

    def command(self) -> list[str]:
        hosts = ",".join(self.extra_meeting_hosts)
        return [
            self.python,
            *self.python_options(),
            "-m",
            "scheduledbot.runtime.main",
            *[arg for namespace in self.namespaces for arg in ("--namespace", namespace)],
            *(["--extra-meeting-hosts", hosts] if hosts else []),
            "--health-port",
            str(self.health_port),
            "--metrics-port",
            str(self.metrics_port),
            *(
                [
                    "--webhook-listen",
                    "127.0.0.1",
                    "--webhook-port",
                    str(self.webhook_port),
                    "--webhook-host",
                    "127.0.0.1",
                    "--webhook-config-name",
                    self.webhook_config,
                ]
                if self.webhook
                else ["--no-webhook"]
            ),
            "--log-level",
            self.log_level,
            "--token-key-file",
            str(self.token_key_file()),
            *self.args,
        ]

    def token_key_file(self) -> Path:
        """The key bot tokens are derived from, one per cluster: instances and restarts share it,
        as the replicas of a Deployment share the mounted Secret."""
        path = self.kubeconfig.parent / "operator-token-key"
        try:
            with path.open("x") as file:
                path.chmod(0o600)
                file.write(base64.b64encode(os.urandom(32)).decode())
        except FileExistsError:
            pass
        return path

    def start(self, *, wait: bool = True, timeout: float = 30) -> None:
        """Spawn the operator on fresh ports; with `wait`, return once it is ready (see `wait_ready`)."""
        if self.alive():
            raise RuntimeError(f"operator already running (pid {self.pid})")
        self.health_port, self.metrics_port, self.webhook_port = free_ports(3)
        if self.webhook:
            self._webhook_ports.add(self.webhook_port)
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(
                f"=== harness: starting the operator (health {self.health_port}, metrics {self.metrics_port}, "
                f"webhook {self.webhook_port if self.webhook else 'off'})\n".encode()
            )
            log.flush()
            self.started_at, self._started = time.time(), time.monotonic()
            self._process = procs.start_leader(self.command(), output=log, cwd=REPO_ROOT, env=env)
        if wait:
            self.wait_ready(timeout=timeout)

    def wait_ready(self, *, timeout: float = 30) -> float:
        """Seconds from the start until /healthz answers and, when on, the webhook listens.

        Fails at once, with the log's tail, if the process exits meanwhile.
        """

        def ready() -> bool:
            if not self.alive():
                code = self._process.returncode if self._process is not None else None
                raise RuntimeError(f"operator exited (code {code}); log {self.log_path}:\n{self.log(4000)}")
            return self.health_latency(timeout=1) is not None and (not self.webhook or self._webhook_listens())

        try:
            until(ready, timeout=timeout, what="operator ready")
        except TimeoutError as error:
            raise TimeoutError(f"{error}; log {self.log_path}:\n{self.log(4000)}") from None
        return time.monotonic() - self._started

    def _webhook_listens(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.webhook_port), timeout=1):
                return True
        except OSError:
            return False

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("operator not running")
        return self._process.pid

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL to its process group: no clean-up at all, as when its node dies."""
        if self._process is None:
            return
        self._signal(signal.SIGKILL)
        self._process.wait(timeout=10)
        self._process = None

    def stop(self, *, grace: float = 20) -> None:
        """SIGTERM (the operator cleans up), then SIGKILL if it is not gone after `grace` seconds."""
        if self._process is None:
            return
        self._signal(signal.SIGTERM)
        self._signal(signal.SIGCONT)  # a frozen process handles SIGTERM only once thawed
        try:
            self._process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None

    def pause(self) -> None:
        """SIGSTOP: frozen, its sockets open but unanswered, as a process the kernel stopped scheduling."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self, *, kill: bool = False, wait: bool = True, timeout: float = 30) -> None:
        """Stop (or kill) and start again, on fresh ports."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start(wait=wait, timeout=timeout)

    def close(self) -> None:
        """Stop it, and remove the webhook configuration a kill left behind."""
        self.stop()
        self.remove_webhook_configuration()

    def __enter__(self) -> OperatorProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _signal(self, sig: signal.Signals) -> None:
        if self._process is None:
            raise RuntimeError("operator not running")
        try:
            os.killpg(self._process.pid, sig)
        except ProcessLookupError:
            pass  # exited on its own; wait() reaps it

    # --- what it shows ----------------------------------------------------------------

    def health_latency(self, *, timeout: float = 5) -> float | None:
        """Seconds /healthz took to answer 200; None if it did not within `timeout`."""
        began = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=timeout) as response:
                response.read()
                ok = response.status == 200
        except OSError:
            return None
        return time.monotonic() - began if ok else None

    def metrics(self, *, timeout: float = 5) -> Metrics:
        """One scrape of /metrics; OSError if it does not answer."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=timeout) as response:
            return Metrics.parse(response.read().decode())

    def log(self, limit: int | None = 20_000) -> str:
        """The log (all starts, appended), its last `limit` characters."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text if limit is None else text[-limit:]

    def webhook_configuration(self) -> dict[str, Any] | None:
        """Its ValidatingWebhookConfiguration as the API server has it; None when there is none."""
        found = kubectl(
            "get",
            "validatingwebhookconfiguration",
            self.webhook_config,
            "-o",
            "json",
            kubeconfig=self.admin_kubeconfig or self.kubeconfig,
            check=False,
        )
        if found.returncode != 0 and "NotFound" in found.stderr:
            return None
        if found.returncode != 0:
            raise KubectlError(found.returncode, found.args, found.stdout, found.stderr)
        config: dict[str, Any] = json.loads(found.stdout)
        return config

    def registered_port(self) -> int | None:
        """The port the API server sends this configuration's reviews to (any instance's); None without one."""
        config = self.webhook_configuration()
        if config is None:
            return None
        url: str = config["webhooks"][0]["clientConfig"]["url"]
        return urllib.parse.urlsplit(url).port

    def remove_webhook_configuration(self) -> None:
        """Delete the webhook configuration if it still sends to one of this instance's ports.

        A configuration another instance registered since (same name, its own port) is left alone.
        """
        if self.webhook and self.registered_port() in self._webhook_ports:
            kubectl(
                "delete",
                "validatingwebhookconfiguration",
                self.webhook_config,
                "--ignore-not-found",
                kubeconfig=self.admin_kubeconfig or self.kubeconfig,
            )
