"""Table tests of `core.election` on fixed clocks: what a candidate does with the Lease it sees."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from scheduledbot.core.election import (
    Decision,
    LeaseRecord,
    Step,
    Timing,
    decide,
    leading_until,
    record_of,
    released,
    spec_of,
)

ME, OTHER = "operator-7d9f-abc_1a2b3c4d", "operator-7d9f-xyz_9f8e7d6c"
#: The steady clock (expiry, rounds) and the wall clock (what the record says) differ on purpose.
NOW = datetime(1970, 1, 2, 0, 0, 0, tzinfo=UTC)
STAMP = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)
EARLIER = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
TIMING = Timing()  # 15 s / 10 s / 2 s


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def held_by(holder: str, *, duration: int = 15, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(
        holder=holder,
        lease_duration_seconds=duration,
        acquire_time=EARLIER,
        renew_time=EARLIER,
        transitions=transitions,
    )


def mine(*, acquired: datetime = STAMP, transitions: int) -> LeaseRecord:
    return LeaseRecord(
        holder=ME, lease_duration_seconds=15, acquire_time=acquired, renew_time=STAMP, transitions=transitions
    )


@dataclass(frozen=True)
class Case:
    name: str
    observed: LeaseRecord | None
    seen: float  # seconds before NOW that this candidate first saw the record as it is
    expected: Decision


CASES = [
    Case(
        "with no Lease yet, should create one held by itself, with no transition",
        None,
        0,
        Decision(step=Step.CREATE, write=mine(transitions=0), next_round=later(2)),
    ),
    Case(
        "holding the Lease, should renew it, keeping when it was acquired and the transition count",
        held_by(ME),
        1,
        Decision(step=Step.RENEW, write=mine(acquired=EARLIER, transitions=3), next_round=later(2)),
    ),
    Case(
        "holding the Lease but having missed renewals, should still renew it (it is its own)",
        held_by(ME),
        30,
        Decision(step=Step.RENEW, write=mine(acquired=EARLIER, transitions=3), next_round=later(2)),
    ),
    Case(
        "with another holder seen renewing 5 s ago, should wait and look again after the retry period",
        held_by(OTHER),
        5,
        Decision(step=Step.WAIT, write=None, next_round=later(2)),
    ),
    Case(
        "with another holder unchanged for 14 s, should look again right when its claim lapses, not later",
        held_by(OTHER),
        14,
        Decision(step=Step.WAIT, write=None, next_round=later(1)),
    ),
    Case(
        "with another holder unchanged for exactly the lease duration, should take it over as a new transition",
        held_by(OTHER),
        15,
        Decision(step=Step.TAKE, write=mine(transitions=4), next_round=later(2)),
    ),
    Case(
        "with another holder unchanged for a minute, should take it over",
        held_by(OTHER),
        60,
        Decision(step=Step.TAKE, write=mine(transitions=4), next_round=later(2)),
    ),
    Case(
        "with a Lease released a moment ago (no holder), should take it at once",
        LeaseRecord(holder="", lease_duration_seconds=1, acquire_time=EARLIER, renew_time=EARLIER, transitions=3),
        0,
        Decision(step=Step.TAKE, write=mine(transitions=4), next_round=later(2)),
    ),
    Case(
        "with a holder whose Lease says a longer duration (60 s), should honour it and wait at 20 s",
        held_by(OTHER, duration=60),
        20,
        Decision(step=Step.WAIT, write=None, next_round=later(2)),
    ),
    Case(
        "with a holder whose Lease has no usable duration, should treat its claim as lapsed",
        held_by(OTHER, duration=0),
        0,
        Decision(step=Step.TAKE, write=mine(transitions=4), next_round=later(2)),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    got = decide(observed=case.observed, seen_at=ago(case.seen), identity=ME, now=NOW, stamp=STAMP, timing=TIMING)
    assert got == case.expected


def test_expiry_is_measured_from_when_the_candidate_saw_the_record_not_from_the_holders_timestamps() -> None:
    # The holder's clock is an hour behind (renewTime long past): the claim is still fresh to us.
    stale_looking = LeaseRecord(
        holder=OTHER,
        lease_duration_seconds=15,
        acquire_time=STAMP - timedelta(hours=1),
        renew_time=STAMP - timedelta(hours=1),
    )
    got = decide(observed=stale_looking, seen_at=ago(1), identity=ME, now=NOW, stamp=STAMP, timing=TIMING)
    assert got.step is Step.WAIT


def test_a_leader_stops_writing_at_the_renew_deadline_before_a_standby_may_take_over() -> None:
    renewed = NOW
    stops = leading_until(renewed, TIMING)
    assert stops == later(10)
    # The standby saw that renewal no earlier than it was sent: it takes over 15 s after, at the earliest.
    standby = decide(observed=held_by(OTHER), seen_at=renewed, identity=ME, now=stops, stamp=STAMP, timing=TIMING)
    assert standby.step is Step.WAIT
    assert standby.next_round > stops


def test_a_released_lease_has_no_holder_a_one_second_duration_and_keeps_the_transition_count() -> None:
    assert released(held_by(ME, transitions=5), stamp=STAMP) == LeaseRecord(
        holder="", lease_duration_seconds=1, acquire_time=STAMP, renew_time=STAMP, transitions=5
    )


def test_the_record_reads_back_from_the_spec_it_writes_with_microsecond_times() -> None:
    record = mine(acquired=EARLIER + timedelta(microseconds=123456), transitions=2)
    spec = spec_of(record)
    assert spec == {
        "holderIdentity": ME,
        "leaseDurationSeconds": 15,
        "leaseTransitions": 2,
        "acquireTime": "2026-03-01T08:00:00.123456Z",
        "renewTime": "2026-03-01T09:00:00.000000Z",
    }
    assert record_of(spec) == record


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, LeaseRecord()),
        ({}, LeaseRecord()),
        ({"holderIdentity": 7, "leaseDurationSeconds": "15", "leaseTransitions": True}, LeaseRecord()),
        ({"holderIdentity": OTHER, "renewTime": "yesterday"}, LeaseRecord(holder=OTHER)),
    ],
    ids=["no spec", "empty spec", "fields of the wrong type", "an unreadable time"],
)
def test_a_malformed_lease_reads_as_lapsed_fields(spec: dict[str, object] | None, expected: LeaseRecord) -> None:
    assert record_of(spec) == expected


def test_a_released_spec_has_no_holder_field() -> None:
    assert spec_of(released(held_by(ME), stamp=STAMP))["holderIdentity"] is None


@pytest.mark.parametrize(
    ("timing", "problem"),
    [
        (Timing(), None),
        (Timing(lease_duration=4, renew_deadline=3, retry_period=0.5), None),
        (Timing(lease_duration=10, renew_deadline=10), "renew deadline (10 s) must be shorter than the lease duration"),
        (Timing(retry_period=10), "retry period (10 s) must be shorter than the renew deadline"),
        (Timing(lease_duration=15.5), "lease duration must be whole seconds"),
        (Timing(retry_period=0), "retry period must be more than 0 seconds, not 0"),
    ],
)
def test_timing_problems_name_the_setting(timing: Timing, problem: str | None) -> None:
    found = timing.problems()
    if problem is None:
        assert found == []
    else:
        assert any(problem in p for p in found), found
