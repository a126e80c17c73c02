"""The deliverer's metrics, and the Events a written outcome calls for."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from scheduledbot.adapters.egress import redact
from scheduledbot.core.notify import Attempt, DeliveryPlan, Verdict, classify
from scheduledbot.runtime.notify_sinks import Target
from scheduledbot.timestamps import parse_time

_LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600)


class NotifyMetrics:
    """Deliveries by outcome, given-up changes, latency, and the queue (pending, in flight)."""

    def __init__(self, registry: CollectorRegistry, queue: Callable[[], tuple[int, int]]) -> None:
        self.attempts = Counter(
            "scheduledbot_notification_attempts",
            "Notification delivery attempts, by outcome (delivered, retry, rejected, gone)",
            ["outcome"],
            registry=registry,
        )
        self.given_up = Counter(
            "scheduledbot_notifications_given_up",
            "State changes whose notification was given up, by reason (Rejected, Expired, Gone)",
            ["reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "scheduledbot_notification_delivery_seconds",
            "State change recorded to its notification accepted by the sink",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        registry.register(_Queue(queue))

    def account(self, folded: Attempt | None, plan: DeliveryPlan, target: Target | None) -> list[tuple[str, str]]:
        """A written status's outcome counted; the Warning Events it calls for, as (reason, message)."""
        events = []
        if folded is not None:
            verdict = classify(folded)
            self.attempts.labels(verdict.value).inc()
            notes = plan.notifications
            if verdict is Verdict.RETRY and notes is not None and notes.failures == 1:
                where = redact(target.sink.url) if target is not None else "its sink"
                message = f"notification {folded.id} to {where} failed: {notes.last_error}"
                if notes.next_attempt_at:
                    message += f"; retrying at {notes.next_attempt_at}"
                events.append(("NotificationsFailing", message))
        if plan.delivered is not None:
            delay = datetime.now(UTC) - parse_time(plan.delivered.at)
            self.latency.observe(max(delay.total_seconds(), 0.0))
        for lost in plan.given_up:
            self.given_up.labels(lost.reason).inc()
            message = f"notification {lost.id} (state {lost.state.value}) given up: {lost.reason}: {lost.message}"
            events.append(("NotificationDropped", message))
        return events


class _Queue(Collector):
    def __init__(self, source: Callable[[], tuple[int, int]]) -> None:
        self._source = source

    def collect(self) -> Any:
        pending, in_flight = self._source()
        yield GaugeMetricFamily(
            "scheduledbot_notifications_pending", "State changes waiting to be delivered, all bots", value=pending
        )
        yield GaugeMetricFamily(
            "scheduledbot_notifications_in_flight", "Deliveries under way or waiting for a slot", value=in_flight
        )
