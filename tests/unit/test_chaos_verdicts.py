"""The fault-injection suite's rules (tools/chaos/verdicts.py) and its table, as tables of cases.

Each case is a bot as the harness records it and what the verdict must say of it: these are
the rules every `make chaos` row rests on, so each is pinned both ways (caught, and not
raised on a bot that did nothing wrong).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from chaos import report
from chaos.verdicts import (
    BotRecord,
    Findings,
    ScenarioResult,
    contradictions,
    could_join,
    count_tracebacks,
    judge,
    off_time,
    state_regressions,
    summarize,
)
from localcluster.stats import percentile

JOIN_AT = 1_000_000.0
HAPPY = ("scheduled", "staged", "joining", "joined", "recording", "ended")


def bot(**fields: Any) -> BotRecord:
    """A bot that joined once, 20 ms late, and ended: nothing wrong; `fields` spoil it."""
    base: dict[str, Any] = {
        "name": "b",
        "join_at": JOIN_AT,
        "arrivals": (JOIN_AT + 0.02,),
        "pods": 1,
        "ready_before_join": True,
        "state": "ended",
        "reason": "MeetingEnded",
        "joined_at": "2026-01-01T00:00:00Z",
        "joined_by": "signal",
        "states": HAPPY,
    }
    return BotRecord(**{**base, **fields})


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (HAPPY, []),
        (("scheduled", "staged", "scheduled", "staged", "joining"), []),  # a release by reschedule is no regression
        (("staged", "joining", "joined", "joining", "joined"), [("joined", "joining")]),
        (("joined", "failed", "joined"), [("failed", "joined")]),
        (("joining", "staged"), [("joining", "staged")]),
        (("ended", "failed"), [("ended", "failed")]),
        (("waiting_room", "joined", "recording"), []),
        ((), []),
    ],
)
def test_state_regressions(states: tuple[str, ...], expected: list[tuple[str, str]]) -> None:
    assert state_regressions(states) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (bot(), ()),
        (
            bot(state="failed", reason="Missed", joined_at=None, joined_by=None),
            ("in the meeting, but its status says failed/Missed with no join",),
        ),
        (bot(state="failed", reason="Missed"), ("in the meeting, but its status says failed/Missed with no join",)),
        (bot(state="failed", reason="BotExited", joined_by="deadline"), ()),  # failed after a join it reports
        (bot(arrivals=(), state="failed", reason="Missed", joined_at=None, joined_by=None), ()),
        (
            bot(arrivals=()),
            ("status says joined at 2026-01-01T00:00:00Z; the meeting server never saw it",),
        ),
        (bot(state="recording"), ("status says recording; the meeting has ended",)),
        (bot(lateness_ms=20), ()),
        (bot(lateness_ms=400), ()),  # within the tolerance
        (
            bot(arrivals=(JOIN_AT + 2.04,), lateness_ms=3040),
            ("status says the join was 3040 ms late; the meeting saw 2040 ms",),
        ),
        (bot(state="recording", meeting_ended=False), ()),
        (
            bot(states=("staged", "joining", "joined", "joining", "joined")),
            ("status went back from joined to joining",),
        ),
        (bot(expect_join=False, deleted=True, state=None), ("joined although it was cancelled before joinAt",)),
        (bot(deleted=True, state=None, present_at_end=True), ("deleted, yet still present in the meeting",)),
        (bot(deleted=True, state=None, meeting_ended=False), ()),
    ],
)
def test_contradictions(record: BotRecord, expected: tuple[str, ...]) -> None:
    assert contradictions(record) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (bot(), None),
        (bot(arrivals=()), None),
        (bot(arrivals=(JOIN_AT - 0.004,)), "arrived 4 ms before joinAt"),
        (bot(arrivals=(JOIN_AT + 3.5,)), "arrived 3.50 s after joinAt (limit 3 s, its Pod was Ready)"),
        (bot(arrivals=(JOIN_AT + 3.5,), ready_before_join=False), None),  # late for a reason of its own
        (bot(arrivals=(JOIN_AT + 30,), late_limit=None), None),
        (bot(arrivals=(JOIN_AT + 1.5,), late_limit=1.0), "arrived 1.50 s after joinAt (limit 1 s, its Pod was Ready)"),
    ],
)
def test_off_time(record: BotRecord, expected: str | None) -> None:
    assert off_time(record) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (bot(), Findings()),
        (bot(arrivals=(JOIN_AT, JOIN_AT + 2)), Findings(double_join=True)),
        (
            bot(arrivals=(), state="staged", joined_at=None, joined_by=None, states=("staged",)),
            Findings(missed_join=True),
        ),
        (bot(arrivals=(), expect_join=None, deleted=True, state=None, joined_at=None, meeting_ended=False), Findings()),
        (bot(pods=2), Findings(extra_pods=True)),
        (bot(pods=5, max_pods=None), Findings()),
    ],
)
def test_judge(record: BotRecord, expected: Findings) -> None:
    assert judge(record) == expected
    assert judge(record).ok is (expected == Findings())


@pytest.mark.parametrize(
    ("ready", "outages", "expected"),
    [
        (False, [], True),  # the operator up all along
        (True, [(0, 100)], True),  # a Ready Pod joins on its own, whatever the operator does
        (False, [(5, 95)], False),  # up 5 s, then 5 s: never 15 s on end
        (False, [(5, 40), (50, 95)], False),  # 10 s between the outages is not enough
        (False, [(5, 40), (60, 95)], True),  # 20 s between them is
        (False, [(-10, 20)], True),  # back at 20: 80 s before the deadline
        (False, [(-10, 90)], False),  # back 10 s before the deadline
        (False, [(20, 30), (25, 40)], True),  # overlapping outages merge
    ],
)
def test_could_join(ready: bool, outages: list[tuple[float, float]], expected: bool) -> None:
    stage_at, deadline_at = 0.0, 100.0
    assert (
        could_join(stage_at=stage_at, deadline_at=deadline_at, ready_before_join=ready, outages=outages, allowance=15.0)
        is expected
    )


def test_percentile_interpolates_as_numpy_does() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    assert math.isnan(percentile([], 50))


def test_tracebacks_are_counted_with_their_exception_line() -> None:
    log = "\n".join(
        [
            "2026 INFO fine",
            "2026 ERROR asyncio: Task exception was never retrieved",
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in f',
            "    raise AttributeError",
            "AttributeError: 'NoneType' object has no attribute 'readexactly'",
            "future: <Task finished name='Task-3' coro=<JoinDispatcher._answer() done, defined at d.py:1>>",
            "Traceback (most recent call last):",
            '  File "y.py", line 2, in g',
            "AssertionError",
        ]
    )
    assert count_tracebacks(log) == (
        2,
        (
            "AttributeError: 'NoneType' object has no attribute 'readexactly'",
            "AssertionError (task JoinDispatcher._answer)",
        ),
    )
    assert count_tracebacks("no trouble\n") == (0, ())


def test_a_scenario_passes_only_without_findings_tracebacks_or_stalls() -> None:
    clean = ScenarioResult(
        name="s", bots=(bot(), bot(name="c", arrivals=(JOIN_AT + 0.04,))), health=(0.01, 0.2), health_limit=1.0
    )
    summary = summarize(clean)
    assert summary.passed is True and summary.problems == ()
    assert (summary.bots, summary.joins_max, summary.pods_max) == (2, 1, 1)
    assert summary.lateness_p50_ms == pytest.approx(30) and summary.lateness_max_ms == pytest.approx(40)
    assert summary.health_max_ms == pytest.approx(200)

    stalled = summarize(ScenarioResult(name="s", bots=(bot(),), health=(0.01, 3.0), health_limit=1.0))
    assert stalled.passed is False and stalled.health_stalls == 1
    assert "/healthz answered slower than 1 s 1 time(s), worst 3.0 s" in stalled.problems

    traced = summarize(ScenarioResult(name="s", bots=(bot(),), tracebacks=2, exceptions=("AssertionError", "X")))
    assert traced.passed is False
    assert traced.problems == ("2 traceback(s) in the operator log, first: AssertionError",)

    missed = summarize(ScenarioResult(name="s", bots=(bot(name="m", arrivals=(), joined_at=None),)))
    assert (missed.passed, missed.missed_joins) == (False, 1)
    assert missed.problems == ("m: never joined by the end of the run, though it could have",)


def test_a_scenario_that_did_not_run_has_no_verdict() -> None:
    summary = summarize(ScenarioResult(name="leader", outcome="not applicable: no leader election"))
    assert summary.passed is None
    assert report.verdict(summary) == "n/a"
    assert report.verdict(summarize(ScenarioResult(name="x", outcome="skipped: 10 s of budget left"))) == "SKIPPED"


def test_the_table_has_a_row_per_scenario_and_names_each_failure_with_its_known_cause() -> None:
    failing = ScenarioResult(name="down", bots=(bot(state="failed", reason="Missed"),), hint="the Missed bug")
    rows = [summarize(ScenarioResult(name="fine", bots=(bot(),))), summarize(failing)]
    text = report.table(rows)
    lines = text.splitlines()
    assert lines[2].startswith("| fine ") and lines[2].rstrip().endswith("| PASS    |")
    assert lines[3].startswith("| down ") and "FAIL" in lines[3]
    assert (
        "- down: b: in the meeting, but its status says failed/Missed with no join [known cause: the Missed bug]"
        in text
    )
    assert '"passed": true' in report.to_json(rows, {"seconds": 1})
