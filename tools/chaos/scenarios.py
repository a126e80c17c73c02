"""The scenarios: each sets up its bots, injects its fault at chosen instants, and says what it expects.

Every scenario is a function of the `Run`, a seeded random generator and a bot count; it
returns once its faults are done, and the runner then calls `Run.finish`. Times are wall-clock
epoch seconds, as joinAt and the meeting server's stamps are. A bot's expectations default to
"joins exactly once, within 3 s of joinAt if its Pod was Ready" (the Pod's own fallback joins
at joinAt + 2 s whatever happens to the operator); a scenario tightens them where the operator
is healthy at the join instant (1 s) and loosens them where a join may rightly not happen.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from chaos.harness import Plan, Run, sleep_until
from localcluster import faults

#: Late limit for a join the operator signals while healthy (the dispatcher is meant for milliseconds).
SIGNAL_LIMIT: Final = 1.0


@dataclass(frozen=True)
class Scenario:
    name: str
    #: What a failure points at: the known way this scenario goes wrong, in words.
    hint: str
    act: Callable[[Run, random.Random, int], None]
    bots: int = 10
    replicas: int = 1
    #: Seconds a run takes, about (the budget starts no scenario it cannot finish).
    estimate: float = 60.0
    #: Seconds after the last joinAt before the meetings are ended.
    settle: float = 5.0


def _plans(
    prefix: str,
    count: int,
    join_at: float,
    lead: int,
    *,
    spread: float = 0.0,
    deadline: int = 20,
    late_limit: float | None = 3.0,
    max_pods: int | None = 1,
) -> list[Plan]:
    return [
        Plan(
            name=f"{prefix}{index:02d}",
            join_at=join_at + index * spread,
            lead=lead,
            deadline=deadline,
            late_limit=late_limit,
            max_pods=max_pods,
        )
        for index in range(count)
    ]


def _staged(run: Run, plans: list[Plan], timeout: float = 30) -> list[Plan]:
    """`plans` created, once all their Pods are staged and Ready."""
    run.create(plans)
    run.wait("staged and Ready", lambda: all(run.pod_ready(plan.name) for plan in plans), timeout)
    return plans


# --- the operator killed, stopped ----------------------------------------------------------------


def kill_storm(run: Run, rng: random.Random, count: int) -> None:
    """kill -9 at random instants among bots staged and joining one after another, back after 1-5 s.

    joinAt spread over 15 s from start + 20 s (lead 10 s); four kills drawn between the end of
    the creation and 2 s after the last joinAt, each no sooner than 1 s after the operator was
    ready again (on a loaded machine a restart takes seconds: back-to-back kills would merge
    into one long outage). Join deadline 60 s: time enough for the restarted operator to stage
    and join what it missed while down, so that every bot can join.
    """
    start = time.time()
    plans = _plans("k", count, start + 20, lead=10, spread=15 / max(count, 1), deadline=60)
    run.create(plans)
    created = time.time()
    operator = run.operators[0]
    kills = sorted(rng.uniform(created + 1, start + 37) for _ in range(4))
    outages = [rng.uniform(1, 5) for _ in kills]
    done: list[tuple[float, float]] = []
    ready = created
    for instant, outage in zip(kills, outages, strict=True):
        sleep_until(max(instant, ready + 1))
        down = time.time()
        run.kill(operator)
        time.sleep(outage)
        run.start(operator)
        ready = time.time()
        done.append((down - start, ready - down))
    run.notes.append("killed at T+" + ", ".join(f"{at:.1f} s (down {took:.1f} s until ready)" for at, took in done))


def _down_around_join(
    prefix: str, *, down: float, back: float, doc: str, deadline: int = 20
) -> Callable[[Run, random.Random, int], None]:
    """The operator killed at joinAt + `down` s and started again at joinAt + `back` s."""

    def act(run: Run, rng: random.Random, count: int) -> None:
        join_at = time.time() + 14
        _staged(run, _plans(prefix, count, join_at, lead=10, deadline=deadline))
        sleep_until(join_at + down)
        run.kill(run.operators[0])
        sleep_until(join_at + back)
        run.start(run.operators[0])

    act.__doc__ = doc
    return act


down_across_join = _down_around_join(
    "d",
    down=-1.5,
    back=1.5,
    doc="Killed 1.5 s before joinAt, back 1.5 s after: the Pods' fallback and the restart race at +2 s.",
)
down_past_deadline = _down_around_join(
    "p",
    down=-2,
    back=7,
    deadline=4,
    doc="Killed before joinAt, back after the join deadline: the bots joined on their own and are in.",
)


# --- the control plane -----------------------------------------------------------------------------


def apiserver_frozen(run: Run, rng: random.Random, count: int) -> None:
    """kube-apiserver stopped (SIGSTOP) from joinAt - 2 s to joinAt + 4 s: joins need no API call."""
    join_at = time.time() + 14
    _staged(run, _plans("a", count, join_at, lead=10, late_limit=SIGNAL_LIMIT))
    layout = run.settings.cluster.layout
    sleep_until(join_at - 2)
    faults.pause("kube-apiserver", layout)
    try:
        sleep_until(join_at + 4)
    finally:
        faults.resume("kube-apiserver", layout)


def etcd_restarted(run: Run, rng: random.Random, count: int) -> None:
    """etcd restarted 3 s before joinAt: the API server fails its calls for a moment."""
    join_at = time.time() + 14
    _staged(run, _plans("e", count, join_at, lead=10, late_limit=SIGNAL_LIMIT))
    sleep_until(join_at - 3)
    took = faults.restart("etcd", layout=run.settings.cluster.layout)
    run.notes.append(f"etcd served again after {took:.1f} s")


# --- the bot Pods ----------------------------------------------------------------------------------------


def _half_staged_hit(
    prefix: str, hit: Callable[[Run, str], None], doc: str
) -> Callable[[Run, random.Random, int], None]:
    """Half the staged bots' Pods hit (by `hit`, with the bot's name) 10 s before joinAt."""

    def act(run: Run, rng: random.Random, count: int) -> None:
        join_at = time.time() + 20
        plans = _staged(run, _plans(prefix, count, join_at, lead=16, max_pods=2))
        sleep_until(join_at - 10)
        for plan in plans[: max(1, count // 2)]:
            hit(run, plan.name)

    act.__doc__ = doc
    return act


staged_pod_deleted = _half_staged_hit(
    "x", Run.delete_pod, "Half the staged Pods deleted 10 s before joinAt: each is created again and joins on time."
)
staged_process_killed = _half_staged_hit(
    "c",
    Run.kill_pod_process,
    "Half the staged Pods' processes killed (SIGKILL) 10 s before joinAt: a new Pod could still join.",
)


def deletions_at_join(run: Run, rng: random.Random, count: int) -> None:
    """Bots deleted 3 s before joinAt (no join), 50 ms before (either is right), 50 ms after (joined, then left)."""
    join_at = time.time() + 14
    plans = _staged(run, _plans("z", count, join_at, lead=10))
    third = max(1, count // 3)
    early, before, after = plans[:third], plans[third : 2 * third], plans[2 * third :]
    for plan in early:
        plan.expect_join = False
    for plan in before:
        plan.expect_join = None
    run.delete_at([p.name for p in early], join_at - 3)
    run.delete_at([p.name for p in before], join_at - 0.05)
    run.delete_at([p.name for p in after], join_at + 0.05)


# --- reschedules ------------------------------------------------------------------------------------------


def reschedule_within_lead(run: Run, rng: random.Random, count: int) -> None:
    """Five reschedules per bot within the lead: the Pod is kept, the join follows the last joinAt."""
    plans = _staged(run, _plans("w", count, time.time() + 22, lead=20, late_limit=SIGNAL_LIMIT))
    storming = list(plans)
    for _ in range(5):
        # Counted from now, not from the start: every new joinAt is still ahead when set,
        # and within the lead, however long the staging took.
        storming = [p for p in storming if run.reschedule(p.name, time.time() + rng.uniform(8, 14))]
        time.sleep(0.5)


def reschedule_across_lead(run: Run, rng: random.Random, count: int) -> None:
    """Reschedules out of the lead (the Pod released) and back within it (staged again), the last one within it."""
    plans = _staged(run, _plans("r", count, time.time() + 20, lead=18, max_pods=None))
    storming = list(plans)
    for _ in range(3):
        storming = [p for p in storming if run.reschedule(p.name, time.time() + 40)]
        time.sleep(rng.uniform(0.5, 1.5))
        storming = [p for p in storming if run.reschedule(p.name, time.time() + rng.uniform(12, 17))]
        time.sleep(rng.uniform(0.5, 1.5))


def reschedule_beyond_then_within(run: Run, rng: random.Random, count: int) -> None:
    """One bot rescheduled beyond its lead, then back within it as soon as it reads scheduled; others alongside.

    The untouched bots were staged long before and are signalled by a healthy operator: their
    joins must stay on the signal path, and /healthz must keep answering.
    """
    start = time.time()
    moved = Plan(name="moved", join_at=start + 25, lead=20, deadline=15, max_pods=None)
    others = _plans("u", count, start + 30, lead=28, late_limit=SIGNAL_LIMIT)
    _staged(run, [moved, *others], timeout=25)
    run.reschedule(moved.name, time.time() + 60)
    run.wait("moved back to scheduled", lambda: run.state(moved.name) == "scheduled", 15)
    run.reschedule(moved.name, time.time() + 15)


# --- two replicas --------------------------------------------------------------------------------------------


def healthy(run: Run, rng: random.Random, count: int) -> None:
    """No fault, one replica: the reference the leader scenarios' lateness is read against."""
    join_at = time.time() + 16
    _staged(run, _plans("h", count, join_at, lead=12, late_limit=SIGNAL_LIMIT))
    sleep_until(join_at + 1)


def _leader_killed(offset: float) -> Callable[[Run, random.Random, int], None]:
    def act(run: Run, rng: random.Random, count: int) -> None:
        # The same bots and timing as `healthy`, so that their lateness compares side by side.
        join_at = time.time() + 16
        _staged(run, _plans("l", count, join_at, lead=12, late_limit=SIGNAL_LIMIT))
        leader = run.leader()
        sleep_until(join_at + offset)
        run.kill(leader)
        run.notes.append(f"killed the leader (replica {leader.log_path.stem}) at joinAt {offset:+g} s")
        time.sleep(5)
        run.start(leader)  # back as a standby, as its Deployment would have it

    act.__doc__ = f"Two replicas; the leader killed at joinAt {offset:+g} s: the standby's armed joins fire."
    return act


SCENARIOS: Final = (
    Scenario(
        "reschedule-beyond-then-within",
        "a pass that asks to be woken now without yielding (a Pod still marked deleting) freezes the event loop",
        reschedule_beyond_then_within,
        bots=10,
        estimate=60,
    ),
    Scenario(
        "down-past-deadline",
        "bots that joined on their own while the operator was down are failed/Missed once it is back",
        down_past_deadline,
        estimate=45,
    ),
    Scenario(
        "staged-process-killed",
        "a staged bot whose process crashed is failed (BotExited) instead of given a new Pod",
        staged_process_killed,
        estimate=50,
    ),
    Scenario(
        "staged-pod-deleted",
        "a deleted staged Pod is not created again in time",
        staged_pod_deleted,
        estimate=50,
    ),
    Scenario(
        "down-across-join",
        "the restarted operator and the Pods' own fallback both join, or the status misreads the join",
        down_across_join,
        estimate=45,
    ),
    Scenario(
        "apiserver-frozen",
        "the join waits for the API server",
        apiserver_frozen,
        estimate=45,
    ),
    Scenario("etcd-restarted", "the join waits for the API server's storage", etcd_restarted, estimate=45),
    Scenario(
        "deletions-at-join",
        "a bot deleted at its join instant joins after its cancel, or stays in the meeting",
        deletions_at_join,
        estimate=45,
    ),
    Scenario(
        "reschedule-within-lead",
        "a reschedule within the lead loses the Pod or the join's new time",
        reschedule_within_lead,
        estimate=55,
    ),
    Scenario(
        "reschedule-across-lead",
        "a Pod released by a reschedule and staged again spins the engine or is joined twice",
        reschedule_across_lead,
        estimate=60,
    ),
    Scenario(
        "healthy",
        "the operator is late with nothing wrong: every other figure reads against this one",
        healthy,
        estimate=40,
    ),
    *(
        Scenario(
            name,
            "two replicas race on status, or the standby has no armed joins",
            _leader_killed(offset),
            replicas=2,
            estimate=60,
        )
        for name, offset in (
            ("leader-killed-at-join-1s", -1.0),
            ("leader-killed-at-join", 0.0),
            ("leader-killed-at-join+1s", 1.0),
        )
    ),
)


KILL_STORM: Final = Scenario(
    "kill-storm",
    "a kill between a Pod's creation and the staged status write leaves a bot spinning, with two Pods (two joins)"
    " or none; bots that joined on their own while the operator was down are failed/Missed once it is back",
    kill_storm,
    bots=30,
    estimate=120,
)


def by_name() -> dict[str, Scenario]:
    return {scenario.name: scenario for scenario in (KILL_STORM, *SCENARIOS)}
