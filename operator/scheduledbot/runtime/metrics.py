"""Prometheus metrics: punctuality, bots by state, failures, staging time.

The registry is the operator's own (not the process-global default) so that tests
can run several engines in one process without duplicate-metric errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Join lateness lives in milliseconds: the buckets start well under one.
_LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_STAGING_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class _States(Collector):
    def __init__(self) -> None:
        self.source: Callable[[], dict[str, int]] = dict

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "scheduledbot_bots", "ScheduledBots known to the operator, by state", labels=["state"]
        )
        for state, count in sorted(self.source().items()):
            family.add_metric([state], count)
        yield family


class _Leader(Collector):
    """1 while this replica may write (read at scrape time: a lapsed lease shows 0 at once)."""

    def __init__(self) -> None:
        self.source: Callable[[], bool] = lambda: True

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "scheduledbot_leader",
            "1 if this replica holds the leader Lease (or runs alone), else 0",
            value=int(self.source()),
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.join_lateness = Histogram(
            "scheduledbot_join_lateness_seconds",
            "Join signal written minus joinAt",
            buckets=_LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.signal_failures = Counter(
            "scheduledbot_join_signal_failures", "Join signals that could not be sent", registry=self.registry
        )
        self.staging_time = Histogram(
            "scheduledbot_pod_staging_seconds",
            "Bot Pod created to Ready",
            buckets=_STAGING_BUCKETS,
            registry=self.registry,
        )
        self.status_writes = Counter(
            "scheduledbot_status_writes", "Status patches sent to the API server", registry=self.registry
        )
        self.passes = Counter("scheduledbot_passes", "Reconcile passes run", registry=self.registry)
        self.pass_spins = Counter(
            "scheduledbot_pass_spins",
            "Passes that asked to run again at once without any change (a planning bug; deferred)",
            registry=self.registry,
        )
        self.admission_reviews = Counter(
            "scheduledbot_admission_reviews",
            "Admission reviews answered, by result (allowed, denied, malformed, oversized, refused)",
            ["result"],
            registry=self.registry,
        )
        self.leadership_transitions = Counter(
            "scheduledbot_leadership_transitions",
            "Times this replica became leader (acquired) or stopped being it (lost, released)",
            ["change"],
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "scheduledbot_event_loop_lag_seconds",
            "How late each event loop ran its callback at a join instant (loop: dispatcher, operator)",
            ["loop"],
            buckets=_LAG_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag_last = Gauge(
            "scheduledbot_event_loop_lag_last_seconds",
            "The event loop's lag at the latest join instant (loop: dispatcher, operator)",
            ["loop"],
            registry=self.registry,
        )
        self.late_staging = Counter(
            "scheduledbot_late_staging",
            "Bots reported, before joinAt, as not expected Ready by joinAt (Warning LateStaging)",
            registry=self.registry,
        )
        self.staging_pace = Gauge(
            "scheduledbot_staging_pace_pods_per_second",
            "The pace paced staging plans with, as measured while it runs",
            registry=self.registry,
        )
        self._states = _States()
        self.registry.register(self._states)
        self._leader = _Leader()
        self.registry.register(self._leader)

    def observe_lag(self, loop: str, seconds: float) -> None:
        """Thread-safe: the dispatcher's thread reports its own loop's lag."""
        self.loop_lag.labels(loop).observe(seconds)
        self.loop_lag_last.labels(loop).set(seconds)

    def bind_states(self, source: Callable[[], dict[str, int]]) -> None:
        self._states.source = source

    def bind_leader(self, source: Callable[[], bool]) -> None:
        self._leader.source = source

    def serve(self, port: int, *, address: str) -> None:
        if port:
            start_http_server(port, addr=address, registry=self.registry)
