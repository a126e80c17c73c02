"""Quiet windows around join instants (a table; pure, no clock)."""

from __future__ import annotations

import pytest

from scheduledbot.core.notify_quiet import JoinInstants


def instants(*joins: float) -> JoinInstants:
    made = JoinInstants(before=1.0, after=0.5, longest=5.0)
    for index, at in enumerate(joins):
        made.set(f"bot{index}", at)
    return made


@pytest.mark.parametrize(
    ("joins", "now", "expected"),
    [
        pytest.param((), 100.0, None, id="no joins"),
        pytest.param((100.0,), 98.9, None, id="before the window"),
        pytest.param((100.0,), 99.0, 100.5, id="its first instant"),
        pytest.param((100.0,), 100.2, 100.5, id="just after the join"),
        pytest.param((100.0,), 100.5, 100.5, id="its last instant"),
        pytest.param((100.0,), 100.6, None, id="after the window"),
        pytest.param((100.0, 101.2), 99.5, 101.7, id="overlapping windows merge"),
        pytest.param((100.0, 102.0), 99.5, 100.5, id="windows apart stay apart"),
        pytest.param(tuple(100.0 + n for n in range(30)), 99.5, 104.5, id="a join every second: at most 5 s"),
        pytest.param((100.0, 100.0, 100.0), 99.5, 100.5, id="bots sharing an instant"),
    ],
)
def test_the_window_around_now(joins: tuple[float, ...], now: float, expected: float | None) -> None:
    assert instants(*joins).quiet_until(now) == expected


def test_a_bot_moved_or_done_leaves_no_window_behind() -> None:
    made = instants(100.0, 100.0)
    made.set("bot0", 200.0)
    assert made.quiet_until(100.0) == 100.5, "bot1 still joins at 100"
    made.set("bot1", None)
    assert made.quiet_until(100.0) is None
    assert made.quiet_until(200.0) == 200.5
    made.set("bot0", None)
    assert len(made) == 0 and made.quiet_until(200.0) is None
