"""Paced staging (core.pacing): table tests, no clock, no sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduledbot.core.pacing import MAX_RATE, MIN_RATE, Cohort, Window, adapt, expected_ready, slots, windows

T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a joinAt on the hour


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("cohorts", "rate", "expected"),
    [
        # One cohort of 5,000 at 20 Pods/s: 250 s of creations, finished by its stageAt (lead 300 s).
        ([Cohort(stage_at=T - s(300), join_at=T, size=5000)], 20, [(T - s(550), T - s(300))]),
        # A short lead is the user's: not lengthened (LateStaging says when it is too short).
        ([Cohort(stage_at=T - s(5), join_at=T, size=100)], 50, [(T - s(7), T - s(5))]),
        # Two instants an hour apart do not touch: each ends at its own stageAt.
        (
            [
                Cohort(stage_at=T - s(300), join_at=T, size=600),
                Cohort(stage_at=T + s(3300), join_at=T + s(3600), size=600),
            ],
            20,
            [(T - s(330), T - s(300)), (T + s(3270), T + s(3300))],
        ),
        # 9:00 and 9:01 with 2,000 each at 20/s: 9:01's window pushes 9:00's earlier, no overlap.
        (
            [
                Cohort(stage_at=T - s(300), join_at=T, size=2000),
                Cohort(stage_at=T - s(240), join_at=T + s(60), size=2000),
            ],
            20,
            [(T - s(440), T - s(340)), (T - s(340), T - s(240))],
        ),
        # Given out of order: the answer keeps the caller's order.
        (
            [Cohort(stage_at=T - s(240), join_at=T + s(60), size=20), Cohort(stage_at=T - s(300), join_at=T, size=20)],
            10,
            [(T - s(242), T - s(240)), (T - s(302), T - s(300))],
        ),
        ([], 20, []),
    ],
)
def test_each_cohort_is_created_by_its_stage_at_at_the_pace(
    cohorts: list[Cohort], rate: float, expected: list[tuple[datetime, datetime]]
) -> None:
    found = windows(cohorts, rate=rate)
    assert [(w.start, w.finish) for w in found] == expected
    for cohort, window in zip(cohorts, found, strict=True):
        assert window.finish <= cohort.stage_at  # the lead is a minimum: earlier, never later


def test_a_rate_that_is_not_positive_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="rate must be positive, got 0"):
        windows([Cohort(stage_at=T, join_at=T, size=1)], rate=0)


@pytest.mark.parametrize(
    ("window", "count", "now", "expected"),
    [
        # Not begun: evenly, the last at its end.
        (Window(start=T - s(100), finish=T - s(60)), 4, T - s(200), [T - s(90), T - s(80), T - s(70), T - s(60)]),
        # A lone bot: exactly at the end of its window (its stageAt), as without pacing.
        (Window(start=T - s(60.05), finish=T - s(60)), 1, T - s(200), [T - s(60)]),
        # Half gone: spread over what is left.
        (Window(start=T - s(100), finish=T - s(60)), 2, T - s(80), [T - s(70), T - s(60)]),
        # Over: every bot due now.
        (Window(start=T - s(100), finish=T - s(60)), 3, T - s(10), [T - s(10)] * 3),
        (Window(start=T - s(100), finish=T - s(60)), 0, T - s(200), []),
    ],
)
def test_slots_spread_a_cohort_over_what_is_left_of_its_window(
    window: Window, count: int, now: datetime, expected: list[datetime]
) -> None:
    assert slots(window, count=count, now=now) == expected


@pytest.mark.parametrize(
    ("rate", "ready", "seconds", "expected"),
    [
        (20.0, 50, 5.0, 0.7 * 20 + 0.3 * 10),  # the cluster managed 10/s: the pace moves towards it
        (20.0, 200, 5.0, 0.7 * 20 + 0.3 * 40),  # and up when the cluster is faster
        (20.0, 0, 5.0, 20.0),  # nothing measured: unchanged
        (20.0, 10, 0.0, 20.0),
        (20.0, 1, 100.0, 0.7 * 20 + 0.3 * MIN_RATE),  # clipped to its bounds
        (20.0, 10**6, 1.0, 0.7 * 20 + 0.3 * MAX_RATE),
    ],
)
def test_the_pace_adapts_to_what_was_measured(rate: float, ready: int, seconds: float, expected: float) -> None:
    assert adapt(rate, ready=ready, seconds=seconds) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("now", "created", "ready", "expected"),
    [
        (T - s(300), T - s(300), 10, -290),  # created well ahead: in time
        (T - s(5), T - s(5), 10, 5),  # created 5 s before joinAt, 10 s to Ready: 5 s late
        (T - s(30), None, 10, -20),  # not created yet: from now
        (T - s(2), T - s(60), 10, -2),  # overdue: expected any moment
        (T - s(100), T - s(95), 10, -85),  # a slot in the future
    ],
)
def test_when_a_bot_pod_is_expected_ready(
    now: datetime, created: datetime | None, ready: float, expected: float
) -> None:
    assert expected_ready(now=now, created_at=created, ready_seconds=ready) == T + s(expected)
