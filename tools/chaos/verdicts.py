"""What one fault-injection run proves: per-bot findings, per-scenario figures and the verdict.

Pure and clock-free: the harness hands over what it recorded (the meeting server's arrivals,
the Pods and states it watched, the operator's log) and these functions judge it, so that the
rules are unit-tested without a cluster.

The rules, per bot:
- double join: the meeting server saw it arrive more than once;
- missed join: it was expected to join (not cancelled before joinAt, and it had a chance:
  `could_join`) and never arrived;
- contradiction: its status says something the meeting server refutes: failed without a join
  (or `Missed`) while it arrived, joined while it never arrived, still in the meeting by its
  status once the meeting has ended, a join lateness more than 0.5 s off the meeting's, back
  from a joining-or-later state to an earlier one, joined although it was cancelled before
  joinAt, or deleted yet still present in the meeting;
- off time: it arrived before joinAt, or later than its limit after joinAt although its Pod was
  Ready by joinAt (a bot whose Pod could not be ready in time is late for a reason of its own);
- extra Pods: more distinct Pods than the scenario allows for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from localcluster.stats import percentile

#: Order of the states from the first join attempt on; anything before it ranks 0.
_JOIN_RANK: Final = {
    "joining": 1,
    "waiting_room": 2,
    "joined": 3,
    "recording": 4,
    "leaving": 5,
    "ended": 6,
    "failed": 6,
}
#: How far status.joinLatenessMs may be from the meeting server's own measure (the bot's request
#: takes milliseconds from the join's start to its arrival; a second off is another instant measured).
LATENESS_TOLERANCE_MS: Final = 500
IN_MEETING: Final = frozenset({"joining", "waiting_room", "joined", "recording", "leaving"})
TERMINAL: Final = frozenset({"ended", "failed"})


@dataclass(frozen=True, kw_only=True)
class BotRecord:
    """Everything recorded about one bot in one run."""

    name: str
    #: The bot's final joinAt, epoch seconds.
    join_at: float
    #: True: must join exactly once; False: must not join (cancelled in time); None: either is right.
    expect_join: bool | None = True
    #: Seconds after joinAt within which a join must arrive when its Pod was Ready by joinAt; None: no bound.
    late_limit: float | None = 3.0
    #: Distinct Pods allowed over the run; None: any number (a Pod released and staged again).
    max_pods: int | None = 1
    #: Meeting server arrival stamps (epoch seconds), in order.
    arrivals: tuple[float, ...] = ()
    #: Still present in the meeting (admitted or waiting) when the run ended.
    present_at_end: bool = False
    #: The meeting was ended by the harness before the run's end.
    meeting_ended: bool = True
    #: Distinct Pod UIDs seen for the bot.
    pods: int = 0
    #: A Pod of the bot was Ready (condition) before joinAt.
    ready_before_join: bool = False
    #: The ScheduledBot was deleted during the run (by the scenario).
    deleted: bool = False
    #: The final status (None: the object is gone).
    state: str | None = None
    reason: str | None = None
    joined_at: str | None = None
    joined_by: str | None = None
    #: status.joinLatenessMs: how late the operator says the join started.
    lateness_ms: int | None = None
    #: Every state the harness saw, in order (consecutive repeats collapsed).
    states: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Findings:
    """What is wrong with one bot; empty tuples and False when nothing is."""

    double_join: bool = False
    missed_join: bool = False
    contradictions: tuple[str, ...] = ()
    off_time: str | None = None
    extra_pods: bool = False

    @property
    def ok(self) -> bool:
        return not (self.double_join or self.missed_join or self.contradictions or self.off_time or self.extra_pods)


def state_regressions(states: Sequence[str]) -> list[tuple[str, str]]:
    """Moves from a joining-or-later state back to an earlier one (`joined -> joining`, `failed -> joined`)."""
    moves = []
    highest = 0
    previous = ""
    for state in states:
        rank = _JOIN_RANK.get(state, 0)
        if highest and (rank < highest or (previous in TERMINAL and state != previous)):
            moves.append((previous, state))
        highest = max(highest, rank)
        previous = state
    return moves


def contradictions(bot: BotRecord) -> tuple[str, ...]:
    """Each way the bot's status contradicts what the meeting server saw."""
    found = []
    arrived = bool(bot.arrivals)
    status_joined = bot.joined_at is not None or bot.joined_by is not None
    if arrived and bot.state == "failed" and (not status_joined or bot.reason == "Missed"):
        found.append(f"in the meeting, but its status says failed/{bot.reason} with no join")
    if not arrived and bot.joined_at is not None:
        found.append(f"status says joined at {bot.joined_at}; the meeting server never saw it")
    if arrived and bot.lateness_ms is not None:
        seen_ms = (bot.arrivals[0] - bot.join_at) * 1000
        if abs(bot.lateness_ms - seen_ms) > LATENESS_TOLERANCE_MS:
            found.append(f"status says the join was {bot.lateness_ms} ms late; the meeting saw {seen_ms:.0f} ms")
    if bot.meeting_ended and not bot.deleted and bot.state in IN_MEETING:
        found.append(f"status says {bot.state}; the meeting has ended")
    for before, after in state_regressions(bot.states):
        found.append(f"status went back from {before} to {after}")
    if arrived and bot.expect_join is False:
        found.append("joined although it was cancelled before joinAt")
    if bot.deleted and bot.present_at_end:
        found.append("deleted, yet still present in the meeting")
    return tuple(found)


def off_time(bot: BotRecord) -> str | None:
    """Why the first arrival was outside [joinAt, joinAt + limit] (the limit counts only for a ready Pod)."""
    if not bot.arrivals:
        return None
    lateness = bot.arrivals[0] - bot.join_at
    if lateness < 0:
        return f"arrived {-lateness * 1000:.0f} ms before joinAt"
    if bot.late_limit is not None and bot.ready_before_join and lateness > bot.late_limit:
        return f"arrived {lateness:.2f} s after joinAt (limit {bot.late_limit:g} s, its Pod was Ready)"
    return None


def judge(bot: BotRecord) -> Findings:
    return Findings(
        double_join=len(bot.arrivals) > 1,
        missed_join=bot.expect_join is True and not bot.arrivals,
        contradictions=contradictions(bot),
        off_time=off_time(bot),
        extra_pods=bot.max_pods is not None and bot.pods > bot.max_pods,
    )


def could_join(
    *,
    stage_at: float,
    deadline_at: float,
    ready_before_join: bool,
    outages: Sequence[tuple[float, float]],
    allowance: float,
) -> bool:
    """Whether a bot had its chance: a Pod Ready by joinAt (it joins on its own, operator or not), or
    an operator up for `allowance` seconds on end (to create and start a Pod) between stageAt and the
    join deadline. `outages` are the (down, ready again) intervals of the operator.
    """
    if ready_before_join:
        return True
    moment = stage_at
    for down, up in sorted(outages):
        if down > moment and min(down, deadline_at) - moment >= allowance:
            return True
        moment = max(moment, up)
    return deadline_at - moment >= allowance


def lateness(bots: Sequence[BotRecord]) -> list[float]:
    """Seconds from joinAt to the first arrival, for every bot that arrived."""
    return [bot.arrivals[0] - bot.join_at for bot in bots if bot.arrivals]


def count_tracebacks(log: str) -> tuple[int, tuple[str, ...]]:
    """Tracebacks in an operator log, and the last line of each (the exception), in order."""
    lines = log.splitlines()
    exceptions = []
    for index, line in enumerate(lines):
        if "Traceback (most recent call last)" not in line:
            continue
        # The exception line is the first one after the indented frames.
        tail = next(
            (later for later in lines[index + 1 :] if later and not later.startswith((" ", "\t"))),
            "(no exception line)",
        )
        # asyncio logs an unretrieved task's coroutine just before: name it, the exception alone rarely does.
        task = lines[index - 1].split("coro=<", 1)[1].split("(", 1)[0] if index and "coro=<" in lines[index - 1] else ""
        exceptions.append((tail.strip() + (f" (task {task})" if task else ""))[:200])
    return len(exceptions), tuple(exceptions)


@dataclass(frozen=True, kw_only=True)
class ScenarioResult:
    """One scenario's run: its bots, the operator's log and health, and what became of it."""

    name: str
    #: "ran", or why not: "not applicable: ...", "skipped: ...", "error: ...".
    outcome: str = "ran"
    bots: tuple[BotRecord, ...] = ()
    #: Tracebacks in the operator logs of the run, and their exception lines.
    tracebacks: int = 0
    exceptions: tuple[str, ...] = ()
    #: /healthz latencies (seconds) while the operator was meant to be up; a probe that got no answer
    #: within its timeout counts as the timeout.
    health: tuple[float, ...] = ()
    #: The /healthz latency above which the operator counts as stalled.
    health_limit: float = 2.0
    #: What the scenario exercises when it fails: the known cause, in words.
    hint: str = ""
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ran(self) -> bool:
        return self.outcome == "ran"


@dataclass(frozen=True, kw_only=True)
class Summary:
    """The table row of a scenario."""

    name: str
    outcome: str
    bots: int
    pods_max: int
    joins_max: int
    double_joins: int
    missed_joins: int
    contradictions: int
    off_time: int
    extra_pods: int
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    health_max_ms: float
    health_stalls: int
    tracebacks: int
    passed: bool | None
    problems: tuple[str, ...]
    hint: str = ""


def summarize(result: ScenarioResult) -> Summary:
    """The scenario's figures and verdict: passed only with no finding, no traceback and no health stall."""
    findings = [(bot, judge(bot)) for bot in result.bots]
    late = lateness(result.bots)
    stalls = [latency for latency in result.health if latency > result.health_limit]
    problems = [f"{bot.name}: {problem}" for bot, found in findings for problem in _problems(found)]
    if result.tracebacks:
        problems.append(f"{result.tracebacks} traceback(s) in the operator log, first: {result.exceptions[0]}")
    if stalls:
        problems.append(
            f"/healthz answered slower than {result.health_limit:g} s {len(stalls)} time(s), worst {max(stalls):.1f} s"
        )
    return Summary(
        name=result.name,
        outcome=result.outcome,
        bots=len(result.bots),
        pods_max=max((bot.pods for bot in result.bots), default=0),
        joins_max=max((len(bot.arrivals) for bot in result.bots), default=0),
        double_joins=sum(found.double_join for _, found in findings),
        missed_joins=sum(found.missed_join for _, found in findings),
        contradictions=sum(bool(found.contradictions) for _, found in findings),
        off_time=sum(found.off_time is not None for _, found in findings),
        extra_pods=sum(found.extra_pods for _, found in findings),
        lateness_p50_ms=percentile(late, 50) * 1000,
        lateness_p99_ms=percentile(late, 99) * 1000,
        lateness_max_ms=max(late) * 1000 if late else math.nan,
        health_max_ms=max(result.health) * 1000 if result.health else math.nan,
        health_stalls=len(stalls),
        tracebacks=result.tracebacks,
        passed=(not problems) if result.ran else None,
        problems=tuple(problems),
        hint=result.hint,
    )


def _problems(found: Findings) -> list[str]:
    problems = []
    if found.double_join:
        problems.append("joined more than once")
    if found.missed_join:
        problems.append("never joined by the end of the run, though it could have")
    problems.extend(found.contradictions)
    if found.off_time:
        problems.append(found.off_time)
    if found.extra_pods:
        problems.append("more Pods than the scenario allows")
    return problems
