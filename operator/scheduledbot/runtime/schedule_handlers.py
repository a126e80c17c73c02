"""kopf handlers of the BotSchedule controller: thin. They hand watch events to `ScheduleController`.

Beside runtime/handlers.py, which hands the same ScheduledBot events to the
engine: kopf calls every event handler of a resource, so the controller sees
each child without the engine knowing of schedules. Imported after that module
(runtime/main.py), so that its start-up handler runs after the one that builds
the metrics registry. Its own API client and
egress client are built at start-up (never at import time) and kept in kopf's
memo.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kopf
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from scheduledbot.adapters.egress import EgressClient, EgressPolicy
from scheduledbot.adapters.kube import Kube
from scheduledbot.api.resource import BOT_SCHEDULE, GROUP, PLURAL, VERSION
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.schedule_feeds import FeedReader
from scheduledbot.runtime.schedules import ScheduleController


class _Counts(Collector):
    """The controller's work as Prometheus counters (the benchmark's writes per occurrence)."""

    def __init__(self, controller: ScheduleController) -> None:
        self._controller = controller

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counts = self._controller.counts
        family = CounterMetricFamily(
            "scheduledbot_schedule_actions", "BotSchedule controller requests, by kind", labels=["kind"]
        )
        for kind in ("creates", "patches", "deletes", "status_writes", "events", "feed_reads"):
            family.add_metric([kind], getattr(counts, kind))
        yield family
        yield CounterMetricFamily("scheduledbot_schedule_passes", "BotSchedule passes", value=counts.passes)
        yield GaugeMetricFamily("scheduledbot_schedules", "BotSchedules known", value=self._controller.schedules())
        first = self._controller.first_plan_seconds
        if first is not None:
            yield GaugeMetricFamily(
                "scheduledbot_schedules_first_plan_seconds",
                "From start-up to the first pass of every BotSchedule known then",
                value=first,
            )


@kopf.on.startup()
async def start_schedules(memo: kopf.Memo, **_: Any) -> None:
    config: Settings = memo.settings
    kube = await Kube.connect()
    egress = EgressClient(policy=EgressPolicy(admitted_hosts=config.extra_feed_hosts), user_agent="scheduledbot-feeds")
    controller = ScheduleController(
        kube=kube,
        feeds=FeedReader(client=egress, read_secret=kube.read_opted_in_secret),
        extra_meeting_hosts=config.extra_meeting_hosts,
        leading=memo.elector.leading if getattr(memo, "elector", None) is not None else lambda: True,
    )
    memo.schedule_kube, memo.feed_client, memo.schedules = kube, egress, controller
    metrics = getattr(memo, "metrics", None)
    if metrics is not None:
        metrics.registry.register(_Counts(controller))
    await controller.prime(config.namespaces)


@kopf.on.cleanup()
async def stop_schedules(memo: kopf.Memo, **_: Any) -> None:
    await memo.schedules.close()
    await memo.feed_client.close()
    await memo.schedule_kube.close()


@kopf.on.event(GROUP, VERSION, BOT_SCHEDULE.plural)
async def schedule_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo.schedules.schedule_event(event.get("type"), event["object"])


@kopf.on.event(GROUP, VERSION, PLURAL)
async def schedule_child_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo.schedules.bot_event(event.get("type"), event["object"])
