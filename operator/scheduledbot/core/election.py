"""Leader election on a `coordination.k8s.io/v1` Lease: the decisions, pure.

The protocol
============
The one every Kubernetes controller uses (client-go's `leaderelection`, which
controller-runtime wraps). A Lease names its holder (`holderIdentity`), how long a
claim lasts (`leaseDurationSeconds`), when the holder took it (`acquireTime`) and last
confirmed it (`renewTime`), and how often it changed hands (`leaseTransitions`).
Every write is a replace guarded by the observed `resourceVersion`, so of two
candidates writing at once exactly one wins; the other sees a conflict.

Expiry is judged on the candidate's own clock, never on the holder's timestamps:
a claim has lapsed when the record has not changed for `leaseDurationSeconds`
since this candidate first saw it as it is (`seen_at`). Clocks of two machines may
disagree by more than a lease; the time one process measured between two of its
own reads does not depend on that.

Why the holder stops before anyone may take over
================================================
The holder counts itself leader only until `renew_deadline` after its last
successful renewal began (`leading_until`); a candidate waits at least
`lease_duration` after it last saw the record change. As long as
`renew_deadline < lease_duration`, a holder that cannot renew (partitioned, its API
calls failing) has stopped writing before another may start.

A holder that gives the Lease up on shutdown writes it with no holder and a
one-second duration, so the standby takes it at its next try instead of waiting out
the lease.

`decide` is called once per round with what was read and `now`; it returns the
write to attempt (if any) and when to run the next round. The runtime
(`runtime/leader.py`) does the calls and keeps `seen_at`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from scheduledbot.timestamps import parse_observed

#: The usual values (client-go, controller-runtime), in seconds.
DEFAULT_LEASE_DURATION: Final = 15.0
DEFAULT_RENEW_DEADLINE: Final = 10.0
DEFAULT_RETRY_PERIOD: Final = 2.0
#: What a released Lease says: expired a second after release, whoever reads it.
RELEASED_DURATION_SECONDS: Final = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """How long a claim lasts, how long its holder keeps writing without renewing, how often to try."""

    lease_duration: float = DEFAULT_LEASE_DURATION
    renew_deadline: float = DEFAULT_RENEW_DEADLINE
    retry_period: float = DEFAULT_RETRY_PERIOD

    def problems(self) -> list[str]:
        """What makes this timing unsafe or unusable, each naming its setting; empty when sound."""
        found = [
            f"{name} must be more than 0 seconds, not {value:g}"
            for name, value in (
                ("lease duration", self.lease_duration),
                ("renew deadline", self.renew_deadline),
                ("retry period", self.retry_period),
            )
            if value <= 0
        ]
        if found:
            return found
        if self.lease_duration != int(self.lease_duration):
            found.append(
                f"lease duration must be whole seconds (the Lease counts in seconds), not {self.lease_duration:g}"
            )
        if self.renew_deadline >= self.lease_duration:
            found.append(
                f"renew deadline ({self.renew_deadline:g} s) must be shorter than the lease duration "
                f"({self.lease_duration:g} s): a leader that cannot renew must stop before another may start"
            )
        if self.retry_period >= self.renew_deadline:
            found.append(
                f"retry period ({self.retry_period:g} s) must be shorter than the renew deadline "
                f"({self.renew_deadline:g} s): the leader gets more than one try to renew"
            )
        return found


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRecord:
    """The election fields of a Lease's spec."""

    holder: str = ""
    lease_duration_seconds: int = 0
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0


class Step(enum.Enum):
    #: No Lease yet: create it, held by us.
    CREATE = "create"
    #: Held by nobody, or by someone whose claim lapsed: replace it, held by us.
    TAKE = "take"
    #: Ours: replace it with a fresh renewTime.
    RENEW = "renew"
    #: Someone else's, still valid: write nothing.
    WAIT = "wait"


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    step: Step
    #: The record to write (None with WAIT).
    write: LeaseRecord | None
    #: When to run the next round if this one's write succeeds, or when waiting.
    next_round: datetime


def decide(
    *, observed: LeaseRecord | None, seen_at: datetime, identity: str, now: datetime, stamp: datetime, timing: Timing
) -> Decision:
    """What to do with the Lease as `observed` (None: there is none), unchanged since `seen_at`.

    `now` and `seen_at` are read from the candidate's own steady clock (expiry and the
    next round); `stamp` is the wall-clock time written into the record for people
    and tools to read (`kubectl get lease`), which no decision here relies on.
    """
    retry = now + timedelta(seconds=timing.retry_period)
    duration = int(timing.lease_duration)
    mine = LeaseRecord(holder=identity, lease_duration_seconds=duration, acquire_time=stamp, renew_time=stamp)
    if observed is None:
        return Decision(step=Step.CREATE, write=mine, next_round=retry)
    if observed.holder == identity:
        renewed = replace(mine, acquire_time=observed.acquire_time or stamp, transitions=observed.transitions)
        return Decision(step=Step.RENEW, write=renewed, next_round=retry)
    lapses = expires_at(observed, seen_at=seen_at)
    if observed.holder and now < lapses:
        # Look again at the retry period (a renewal resets our view), or right when it lapses.
        return Decision(step=Step.WAIT, write=None, next_round=min(retry, lapses))
    return Decision(step=Step.TAKE, write=replace(mine, transitions=observed.transitions + 1), next_round=retry)


def expires_at(observed: LeaseRecord, *, seen_at: datetime) -> datetime:
    """When a claim lapses for a candidate that first saw this record at `seen_at`."""
    return seen_at + timedelta(seconds=max(0, observed.lease_duration_seconds))


def leading_until(renew_began: datetime, timing: Timing) -> datetime:
    """Until when a holder whose latest successful write was sent at `renew_began` may act as leader."""
    return renew_began + timedelta(seconds=timing.renew_deadline)


def released(record: LeaseRecord, *, stamp: datetime) -> LeaseRecord:
    """The record a holder writes when it steps down on purpose."""
    return LeaseRecord(
        holder="",
        lease_duration_seconds=RELEASED_DURATION_SECONDS,
        acquire_time=stamp,
        renew_time=stamp,
        transitions=record.transitions,
    )


# The Lease's wire form -------------------------------------------------------------------------


def record_of(spec: dict[str, Any] | None) -> LeaseRecord:
    """The election fields of a Lease's `spec`; a field of the wrong type reads as absent.

    An absent or malformed duration reads as 0: such a claim has lapsed, as a Lease
    that nobody keeps should.
    """
    spec = spec or {}
    holder = spec.get("holderIdentity")
    duration = spec.get("leaseDurationSeconds")
    transitions = spec.get("leaseTransitions")
    return LeaseRecord(
        holder=holder if isinstance(holder, str) else "",
        lease_duration_seconds=duration if isinstance(duration, int) and not isinstance(duration, bool) else 0,
        acquire_time=parse_observed(spec.get("acquireTime")),
        renew_time=parse_observed(spec.get("renewTime")),
        transitions=transitions if isinstance(transitions, int) and not isinstance(transitions, bool) else 0,
    )


def spec_of(record: LeaseRecord) -> dict[str, Any]:
    """The Lease `spec` that holds `record` (MicroTime timestamps, as the API stores them)."""
    spec: dict[str, Any] = {
        "holderIdentity": record.holder or None,
        "leaseDurationSeconds": record.lease_duration_seconds,
        "leaseTransitions": record.transitions,
    }
    if record.acquire_time is not None:
        spec["acquireTime"] = _format_micro(record.acquire_time)
    if record.renew_time is not None:
        spec["renewTime"] = _format_micro(record.renew_time)
    return spec


def _format_micro(moment: datetime) -> str:
    # Not `timestamps.format_time`: a MicroTime must carry exactly six fractional digits
    # (the API server parses it with Go's RFC3339Micro layout), never none or three.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
