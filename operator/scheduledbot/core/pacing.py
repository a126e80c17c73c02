"""Paced staging: when each cohort starts staging, and at what pace. Pure: no clock, no I/O.

Why not stage every bot at its stageAt
======================================
Most meetings start on the hour, so thousands of bots share one stageAt. Created in
one burst, their Pods queue at the API server and the nodes: at 5,000 bots staging
ran until 45 s after joinAt and 10% of the bots missed their meeting. Here the
operator knows every cohort (the bots sharing a stageAt) still to stage and spreads
their Pod creations at the pace the cluster sustains, starting early enough that
each cohort is created by its stageAt: the user's `stagingLeadSeconds` is a
minimum, so a bot may be staged earlier than its stageAt, never later.

How the starts are found
========================
Backwards from the last cohort: it must be created by its stageAt, which takes
`size / rate` seconds; the cohort before it must be done by the earlier of its own
stageAt and the start of the next one; and so on. Within a window the last bot is
created at its end, so that a lone bot is staged exactly at its stageAt, as without
pacing. A lead too short for the Pod to be Ready in time is not lengthened here (the
user chose it); the bot is reported `LateStaging` instead.

The pace itself is measured while staging runs (`adapt`): Pods that became Ready
per second while a backlog waited; it moves slowly (a weighted mean) and within
bounds, so that one slow moment does not stall the hour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

#: Bounds of the pace, Pods per second: a measurement outside them is clipped.
MIN_RATE: Final = 1.0
MAX_RATE: Final = 500.0
#: Weight of a new measurement in the pace (exponentially weighted mean).
ADAPT_WEIGHT: Final = 0.3


@dataclass(frozen=True, slots=True)
class Cohort:
    """Bots still to stage that share one stageAt (and so one joinAt and lead)."""

    stage_at: datetime
    join_at: datetime
    size: int


@dataclass(frozen=True, slots=True)
class Window:
    """When a cohort's Pod creations start, and by when they are all out."""

    start: datetime
    finish: datetime


def windows(cohorts: Sequence[Cohort], *, rate: float) -> list[Window]:
    """Each cohort's staging window (same order as given), at `rate` Pods per second overall.

    Windows never overlap, so the cluster sees at most `rate` creations per second,
    and none finishes after its cohort's stageAt.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    order = sorted(range(len(cohorts)), key=lambda i: (cohorts[i].stage_at, cohorts[i].join_at))
    found: dict[int, Window] = {}
    bound: datetime | None = None
    for i in reversed(order):
        cohort = cohorts[i]
        finish = cohort.stage_at if bound is None else min(cohort.stage_at, bound)
        start = finish - timedelta(seconds=cohort.size / rate)
        found[i] = Window(start=start, finish=finish)
        bound = start
    return [found[i] for i in range(len(cohorts))]


def slots(window: Window, *, count: int, now: datetime) -> list[datetime]:
    """When each of `count` bots of a cohort is created: evenly over what is left of its window,
    the last at its end.

    A window already begun is spread over what remains of it; one already over
    leaves every bot due now, as fast as the API server takes them.
    """
    if count <= 0:
        return []
    finish = max(window.finish, now)
    span = finish - max(window.start, now)
    step = span / count
    return [finish - step * (count - 1 - k) for k in range(count)]


def adapt(rate: float, *, ready: int, seconds: float) -> float:
    """The pace after `ready` Pods became Ready in `seconds` while more were waiting."""
    if seconds <= 0 or ready <= 0:
        return rate
    measured = min(MAX_RATE, max(MIN_RATE, ready / seconds))
    return (1 - ADAPT_WEIGHT) * rate + ADAPT_WEIGHT * measured


def expected_ready(*, now: datetime, created_at: datetime | None, ready_seconds: float) -> datetime:
    """When a not-yet-Ready bot Pod is expected Ready.

    `created_at` is when its Pod was created, or is due to be (None: now). A Pod past
    its expected time is expected any moment: now.
    """
    return max(now, (created_at or now) + timedelta(seconds=ready_seconds))
