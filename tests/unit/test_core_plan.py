"""Table tests of `core.plan` on a fixed clock: no cluster, no sleeping."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduledbot.api.models import BotState, JoinedBy, ScheduledBotStatus, parse_spec
from scheduledbot.core.model import (
    AddFinalizer,
    ArmJoin,
    BotReport,
    BotView,
    CreatePod,
    CreateSecret,
    Defaults,
    DeletePod,
    DisarmJoin,
    Emit,
    Leave,
    MoveSelfJoin,
    Observed,
    Plan,
    PodView,
    RemoveFinalizer,
    SignalOutcome,
)
from scheduledbot.core.plan import plan

NOW = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
JOIN = NOW + timedelta(minutes=10)
DEFAULTS = Defaults(staging_lead_seconds=300, join_deadline_seconds=120, max_duration_seconds=3600)


def at(seconds: float) -> datetime:
    """An instant relative to JOIN."""
    return JOIN + timedelta(seconds=seconds)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def bot(
    *,
    state: BotState | None = None,
    join: datetime = JOIN,
    status: dict[str, Any] | None = None,
    created: datetime = NOW - timedelta(minutes=1),
    deleted: datetime | None = None,
    finalizer: bool = False,
    lead: int | None = None,
    spec: dict[str, Any] | None = None,
) -> BotView:
    raw: dict[str, Any] = {"meetingUrl": "https://zoom.us/j/123456789", "joinAt": iso(join)}
    if lead is not None:
        raw["stagingLeadSeconds"] = lead
    raw |= spec or {}
    fields: dict[str, Any] = {}
    if state is not None:
        fields = {
            "state": state,
            "joinAt": iso(join),
            "stageAt": iso(join - timedelta(seconds=lead or 300)),
            "platform": "zoom",
            "observedGeneration": 1,
        }
    fields |= status or {}
    try:
        valid, error = parse_spec(raw, extra_hosts=frozenset()), None
    except ValueError as bad:
        valid, error = None, str(bad)
    return BotView(
        name="standup",
        namespace="team",
        uid="uid-1",
        generation=1,
        created_at=created,
        deleted_at=deleted,
        has_finalizer=finalizer,
        spec=valid,
        spec_error=error,
        status=ScheduledBotStatus.model_validate(fields),
    )


def pod(
    *,
    ready: bool = True,
    phase: str = "Running",
    deleting: bool = False,
    waiting: str | None = None,
    exit_code: int | None = None,
    **extra: Any,
) -> PodView:
    return PodView(
        name="standup-bot",
        uid="pod-1",
        phase=phase,
        ready=ready,
        ip="127.0.0.10" if ready else None,
        deleting=deleting,
        waiting_reason=waiting,
        waiting_message="back-off pulling" if waiting else None,
        exit_code=exit_code,
        **extra,
    )


def report(
    state: str, *, version: int = 2, by: JoinedBy | None = JoinedBy.SIGNAL, since: datetime | None = None, **kw: Any
) -> BotReport:
    return BotReport(version=version, state=state, since=since or at(0.01), joined_by=by, **kw)


@dataclass(frozen=True)
class Case:
    name: str
    bot: BotView
    now: datetime
    observed: Observed = field(default_factory=lambda: Observed(pod=None, secret=False))
    state: BotState | None = None
    reason: str | None = None
    actions: tuple[type, ...] = ()
    wake_at: datetime | None = None
    check: Any = None


def kinds(result: Plan) -> tuple[type, ...]:
    return tuple(type(a) for a in result.actions if not isinstance(a, Emit))


def events(result: Plan) -> list[str]:
    return [a.reason for a in result.actions if isinstance(a, Emit)]


CASES = [
    Case(
        "a new bot is accepted as scheduled and wakes at stageAt = joinAt - lead",
        bot(),
        NOW,
        state=BotState.SCHEDULED,
        reason="Scheduled",
        wake_at=at(-300),
        check=lambda p: (
            p.status.stage_at == iso(at(-300)) and p.status.join_at == iso(JOIN) and events(p) == ["Scheduled"]
        ),
    ),
    Case(
        "a new bot created 90 s before joinAt is flagged ShortLead and wakes at once to stage",
        bot(),
        at(-90),
        state=BotState.SCHEDULED,
        wake_at=at(-90),
        check=lambda p: events(p) == ["Scheduled", "ShortLead"],
    ),
    Case(
        "a new bot with a stagingLeadSeconds under 2 minutes is flagged and stages at its stageAt",
        bot(lead=60),
        NOW,
        state=BotState.SCHEDULED,
        wake_at=at(-60),
        check=lambda p: events(p) == ["Scheduled", "ShortLead"],
    ),
    Case(
        "a new bot whose joinAt was before its creation fails with JoinAtInPast",
        bot(join=NOW - timedelta(minutes=5)),
        NOW,
        state=BotState.FAILED,
        reason="JoinAtInPast",
        actions=(DisarmJoin,),
        check=lambda p: "cannot be in the past" in (p.status.message or "") and "Failed" in events(p),
    ),
    Case(
        "a new bot first seen after its join deadline fails with Missed",
        bot(),
        at(121),
        state=BotState.FAILED,
        reason="Missed",
        actions=(DisarmJoin,),
    ),
    Case(
        "a new bot with an unsupported meeting URL fails with InvalidSpec naming the field",
        bot(spec={"meetingUrl": "https://example.com/x"}),
        NOW,
        state=BotState.FAILED,
        reason="InvalidSpec",
        actions=(DisarmJoin,),
        check=lambda p: "spec.meetingUrl" in (p.status.message or ""),
    ),
    Case(
        "a scheduled bot before stageAt does nothing and sleeps until stageAt",
        bot(state=BotState.SCHEDULED),
        at(-400),
        state=BotState.SCHEDULED,
        wake_at=at(-300),
    ),
    Case(
        "a scheduled bot at stageAt creates its Secret and Pod and becomes staged",
        bot(state=BotState.SCHEDULED),
        at(-300),
        state=BotState.STAGED,
        reason="Staged",
        actions=(CreateSecret, CreatePod),
        wake_at=at(120),
        check=lambda p: p.status.pod_name == "standup-bot" and events(p) == ["Staged"],
    ),
    Case(
        "a scheduled bot past stageAt whose released Pod is still deleting waits for its DELETED event, not for now",
        bot(state=BotState.SCHEDULED),
        at(-60),
        Observed(pod=pod(deleting=True, gone_by=at(-50)), secret=True),
        state=BotState.SCHEDULED,
        actions=(),
        wake_at=at(-45),
    ),
    Case(
        "a scheduled bot past stageAt finding a Pod made for another joinAt releases it and waits for it to go",
        bot(state=BotState.SCHEDULED),
        at(-60),
        Observed(pod=pod(join_at=at(-100)), secret=True),
        state=BotState.SCHEDULED,
        actions=(DeletePod,),
        wake_at=at(-55),
    ),
    Case(
        "a scheduled bot past stageAt finding its own Pod for this join (staged write lost) adopts it",
        bot(state=BotState.SCHEDULED),
        at(-60),
        Observed(pod=pod(join_at=JOIN, meeting_url="https://zoom.us/j/123456789"), secret=True),
        state=BotState.STAGED,
        reason="Staged",
        actions=(),
        check=lambda p: "adopted" in p.actions[-1].message and p.status.pod_name == "standup-bot",
    ),
    Case(
        "a scheduled bot whose Secret exists creates only the Pod",
        bot(state=BotState.SCHEDULED),
        at(-300),
        Observed(pod=None, secret=True),
        state=BotState.STAGED,
        actions=(CreatePod,),
    ),
    Case(
        "a staged bot whose Pod the API server refused fails PodRejected with the server's message",
        bot(state=BotState.STAGED),
        at(-300),
        Observed(
            pod=None, secret=True, rejection='Pod "standup-bot" is invalid: spec.containers[0].image: Required value'
        ),
        state=BotState.FAILED,
        reason="PodRejected",
        actions=(DisarmJoin,),
        check=lambda p: "spec.containers[0].image" in (p.status.message or ""),
    ),
    Case(
        "a scheduled bot whose joinAt moved later records Rescheduled and moves stageAt",
        bot(state=BotState.SCHEDULED, join=at(600), status={"joinAt": iso(JOIN)}),
        at(-400),
        state=BotState.SCHEDULED,
        wake_at=at(300),
        check=lambda p: events(p) == ["Rescheduled"] and p.status.join_at == iso(at(600)),
    ),
    Case(
        "a staged bot with a Ready Pod arms its join for joinAt and follows the bot",
        bot(state=BotState.STAGED),
        at(-200),
        Observed(pod=pod(), secret=True),
        state=BotState.STAGED,
        actions=(ArmJoin,),
        wake_at=at(120),
        check=lambda p: (
            p.actions[0].join_at == JOIN
            and p.follow == "127.0.0.10:8181"
            and p.actions[0].request_id == f"uid-1@{iso(JOIN)}"
        ),
    ),
    Case(
        "a staged bot whose Pod is not Ready at joinAt waits for it until the deadline",
        bot(state=BotState.STAGED),
        at(1),
        Observed(pod=pod(ready=False), secret=True),
        state=BotState.STAGED,
        wake_at=at(120),
    ),
    Case(
        "a staged bot whose Pod is not Ready by the deadline fails NotReadyInTime with the Pod's reason",
        bot(state=BotState.STAGED),
        at(120),
        Observed(pod=pod(ready=False, waiting="ImagePullBackOff"), secret=True),
        state=BotState.FAILED,
        reason="NotReadyInTime",
        actions=(DeletePod, DisarmJoin),
        check=lambda p: "ImagePullBackOff" in (p.status.message or ""),
    ),
    Case(
        "a staged bot whose Pod was deleted by someone else creates it again",
        bot(state=BotState.STAGED),
        at(-60),
        Observed(pod=None, secret=True),
        state=BotState.STAGED,
        actions=(CreatePod,),
        check=lambda p: events(p) == ["PodRecreated"],
    ),
    Case(
        "a staged bot whose Pod is still terminating waits for it to go",
        bot(state=BotState.STAGED),
        at(-60),
        Observed(pod=pod(deleting=True), secret=True),
        state=BotState.STAGED,
        actions=(),
    ),
    Case(
        "a staged bot rescheduled beyond its lead releases its Pod and is scheduled again",
        bot(state=BotState.STAGED, join=at(3600), status={"joinAt": iso(JOIN)}),
        at(-200),
        Observed(pod=pod(), secret=True),
        state=BotState.SCHEDULED,
        reason="Rescheduled",
        actions=(DisarmJoin, DeletePod),
        wake_at=at(3300),
        check=lambda p: p.status.pod_name is None and events(p) == ["Rescheduled"],
    ),
    Case(
        "a staged bot rescheduled within its lead keeps its Pod, moves the self-join and re-arms",
        bot(state=BotState.STAGED, join=at(60), status={"joinAt": iso(JOIN)}),
        at(-200),
        Observed(pod=pod(), secret=True),
        state=BotState.STAGED,
        actions=(MoveSelfJoin, ArmJoin),
        check=lambda p: p.actions[-1].join_at == at(60) and events(p) == ["Rescheduled"],
    ),
    Case(
        "a staged bot whose signal went out stays staged until the bot answers",
        bot(state=BotState.STAGED),
        at(0.001),
        Observed(
            pod=pod(), secret=True, signal=SignalOutcome(join_at=JOIN, sent_at=at(0.0005), error=None, report=None)
        ),
        state=BotState.STAGED,
        actions=(ArmJoin,),
    ),
    Case(
        "a signalled bot that has not said it joined by the deadline fails NoJoinAnswer and its Pod goes",
        bot(state=BotState.STAGED),
        at(121),
        Observed(
            pod=pod(),
            secret=True,
            report=report("ready"),
            signal=SignalOutcome(join_at=JOIN, sent_at=at(0.0005), error=None, report=None),
        ),
        state=BotState.FAILED,
        reason="NoJoinAnswer",
        actions=(DeletePod, DisarmJoin),
        check=lambda p: "it says ready" in (p.status.message or "") and p.wake_at is None,
    ),
    Case(
        "a signalled bot whose state cannot be read by the deadline fails NoJoinAnswer naming why",
        bot(state=BotState.STAGED),
        at(121),
        Observed(
            pod=pod(),
            secret=True,
            state_error="the answer is over 65536 bytes",
            signal=SignalOutcome(join_at=JOIN, sent_at=at(0.0005), error=None, report=None),
        ),
        state=BotState.FAILED,
        reason="NoJoinAnswer",
        actions=(DeletePod, DisarmJoin),
        check=lambda p: "over 65536 bytes" in (p.status.message or ""),
    ),
    Case(
        "a signalled bot not heard from yet at the deadline is asked, not failed",
        bot(state=BotState.STAGED),
        at(121),
        Observed(
            pod=pod(), secret=True, signal=SignalOutcome(join_at=JOIN, sent_at=at(0.0005), error=None, report=None)
        ),
        state=BotState.STAGED,
        actions=(),
        check=lambda p: p.follow is not None and p.wake_at is None,
    ),
    Case(
        "a staged bot whose bot answered the signal becomes joining with the signal's lateness",
        bot(state=BotState.STAGED),
        at(0.003),
        Observed(
            pod=pod(),
            secret=True,
            report=report("joining"),
            signal=SignalOutcome(join_at=JOIN, sent_at=at(0.0015), error=None, report=None),
        ),
        state=BotState.JOINING,
        reason="JoinSignaled",
        actions=(DisarmJoin,),
        check=lambda p: (
            p.status.join_lateness_ms == 2
            and p.status.joined_by is JoinedBy.SIGNAL
            and p.status.join_signaled_at is not None
        ),
    ),
    Case(
        "a signal re-sent after a restart to a bot that joined by an earlier one keeps the bot's join time",
        bot(state=BotState.STAGED),
        at(6),
        Observed(
            pod=pod(),
            secret=True,
            report=report("joined", since=at(0.5), join_started_at=at(0.01)),
            signal=SignalOutcome(join_at=JOIN, sent_at=at(5.786), error=None, report=None),
        ),
        state=BotState.JOINED,
        reason="JoinSignaled",
        actions=(DisarmJoin,),
        check=lambda p: p.status.join_lateness_ms == 10 and p.status.joined_by is JoinedBy.SIGNAL,
    ),
    Case(
        "a late signal answered 'joined by deadline' records the bot's own join, not the signal",
        bot(state=BotState.STAGED),
        at(30),
        Observed(
            pod=pod(),
            secret=True,
            report=report("joined", by=JoinedBy.DEADLINE, since=at(3.0), join_started_at=at(2.0)),
            signal=SignalOutcome(join_at=JOIN, sent_at=at(29), error=None, report=None),
        ),
        state=BotState.JOINED,
        reason="JoinedByDeadline",
        actions=(DisarmJoin,),
        check=lambda p: p.status.join_lateness_ms == 2000 and p.status.join_signaled_at is None,
    ),
    Case(
        "a staged bot whose bot joined by its own deadline adopts that state, not signalling again",
        bot(state=BotState.STAGED),
        at(30),
        Observed(
            pod=pod(),
            secret=True,
            report=report("joined", by=JoinedBy.DEADLINE, since=at(3.0), join_started_at=at(2.0)),
        ),
        state=BotState.JOINED,
        reason="JoinedByDeadline",
        actions=(DisarmJoin,),
        check=lambda p: (
            p.status.joined_by is JoinedBy.DEADLINE
            and p.status.join_lateness_ms == 2000
            and p.status.join_signaled_at is None
        ),
    ),
    Case(
        "a staged bot whose bot gave up at its own deadline fails with the bot's reason",
        bot(state=BotState.STAGED),
        at(121),
        Observed(pod=pod(), secret=True, report=report("failed", by=None, reason="Missed", message="no join signal")),
        state=BotState.FAILED,
        reason="Missed",
        actions=(DisarmJoin,),
    ),
    Case(
        "a staged bot first seen ready past its deadline is Missed, not signalled late",
        bot(state=BotState.STAGED),
        at(125),
        Observed(pod=pod(), secret=True, report=report("ready", by=None)),
        state=BotState.FAILED,
        reason="Missed",
        actions=(DisarmJoin,),
    ),
    Case(
        "a staged bot first seen past its deadline, state not read yet, is followed before any verdict",
        bot(state=BotState.STAGED),
        at(125),
        Observed(pod=pod(), secret=True),
        state=BotState.STAGED,
        actions=(),
        check=lambda p: p.follow == "127.0.0.10:8181" and p.wake_at is None,
    ),
    Case(
        "a staged bot past its deadline whose state cannot be read is Missed, naming why",
        bot(state=BotState.STAGED),
        at(125),
        Observed(pod=pod(), secret=True, state_error="connection refused"),
        state=BotState.FAILED,
        reason="Missed",
        actions=(DisarmJoin,),
        check=lambda p: "connection refused" in (p.status.message or ""),
    ),
    Case(
        "a staged bot whose warm bot died before joinAt, never signalled, has its Pod replaced",
        bot(state=BotState.STAGED),
        at(-20),
        Observed(
            pod=pod(phase="Failed", ready=False, exit_code=137, finished_at=at(-21)),
            secret=True,
            report=report("ready", by=None),
        ),
        state=BotState.STAGED,
        actions=(DisarmJoin, DeletePod),
        check=lambda p: events(p) == ["PodReplaced"] and "137" in p.actions[-1].message,
    ),
    Case(
        "a staged bot whose bot died after its signal was sent fails BotExited (no second join)",
        bot(state=BotState.STAGED),
        at(0.5),
        Observed(
            pod=pod(phase="Failed", ready=False, exit_code=137, finished_at=at(-0.5)),
            secret=True,
            report=report("ready", by=None),
            signal=SignalOutcome(join_at=JOIN, sent_at=at(0.001), error=None, report=None),
        ),
        state=BotState.FAILED,
        reason="BotExited",
        actions=(DisarmJoin,),
    ),
    Case(
        "a staged bot whose bot died after joinAt fails BotExited: its own timer may have joined",
        bot(state=BotState.STAGED),
        at(5),
        Observed(
            pod=pod(phase="Failed", ready=False, exit_code=137, finished_at=at(2.5)),
            secret=True,
            report=report("ready", by=None),
        ),
        state=BotState.FAILED,
        reason="BotExited",
        actions=(DisarmJoin,),
    ),
    Case(
        "a staged bot whose meetingUrl changed before the join replaces its Pod",
        bot(state=BotState.STAGED),
        at(-60),
        Observed(pod=pod(meeting_url="https://zoom.us/j/111111111"), secret=True, report=report("ready", by=None)),
        state=BotState.STAGED,
        actions=(DisarmJoin, DeletePod),
        check=lambda p: events(p) == ["PodReplaced"],
    ),
    Case(
        "a failed signal is retried a second later while the deadline allows",
        bot(state=BotState.STAGED),
        at(0.5),
        Observed(
            pod=pod(), secret=True, signal=SignalOutcome(join_at=JOIN, sent_at=None, error="refused", report=None)
        ),
        state=BotState.STAGED,
        actions=(ArmJoin,),
        check=lambda p: p.actions[-1].not_before == at(1.5) and events(p) == ["SignalFailed"],
    ),
    Case(
        "a failed signal past the deadline fails the bot with SignalFailed",
        bot(state=BotState.STAGED),
        at(121),
        Observed(
            pod=pod(), secret=True, signal=SignalOutcome(join_at=JOIN, sent_at=None, error="refused", report=None)
        ),
        state=BotState.FAILED,
        reason="SignalFailed",
        actions=(DeletePod, DisarmJoin),
    ),
    Case(
        "a joining bot's next pass holds the finalizer (not written with the joining status)",
        bot(state=BotState.JOINING),
        at(0.01),
        Observed(pod=pod(), secret=True, report=report("joining")),
        state=BotState.JOINING,
        actions=(AddFinalizer,),
    ),
    Case(
        "a joining bot that reports joined records joinedAt",
        bot(state=BotState.JOINING, finalizer=True),
        at(1),
        Observed(pod=pod(), secret=True, report=report("joined")),
        state=BotState.JOINED,
        reason="Joined",
        check=lambda p: p.status.joined_at == "2026-01-01T10:10:00.010Z" and events(p) == ["Joined"],
    ),
    Case(
        "a joining bot that reports recording straight away records joinedAt and Joined once",
        bot(state=BotState.JOINING, finalizer=True),
        at(1),
        Observed(pod=pod(), secret=True, report=report("recording")),
        state=BotState.RECORDING,
        check=lambda p: p.status.joined_at == "2026-01-01T10:10:00.010Z" and events(p) == ["Joined"],
    ),
    Case(
        "a recording bot whose joinedAt is set emits no second Joined",
        bot(state=BotState.JOINED, finalizer=True, status={"joinedAt": "2026-01-01T10:10:00.010Z"}),
        at(5),
        Observed(pod=pod(), secret=True, report=report("recording")),
        state=BotState.RECORDING,
        check=lambda p: p.status.joined_at == "2026-01-01T10:10:00.010Z" and events(p) == [],
    ),
    Case(
        "a staged bot first heard of already joined (a restart) records joinedAt and Joined",
        bot(state=BotState.STAGED),
        at(30),
        Observed(
            pod=pod(), secret=True, report=report("joined", by=JoinedBy.SIGNAL, since=at(1.0), join_started_at=at(0.0))
        ),
        state=BotState.JOINED,
        actions=(DisarmJoin,),
        check=lambda p: p.status.joined_at == "2026-01-01T10:10:01Z" and events(p) == ["JoinSignaled", "Joined"],
    ),
    Case(
        "a bot that reports waiting_room shows it",
        bot(state=BotState.JOINING, finalizer=True),
        at(1),
        Observed(pod=pod(), secret=True, report=report("waiting_room", message="Waiting for the host")),
        state=BotState.WAITING_ROOM,
        check=lambda p: p.status.message == "Waiting for the host",
    ),
    Case(
        "a bot that reports ended ends and lets go of its finalizer",
        bot(state=BotState.RECORDING, finalizer=True),
        at(600),
        Observed(pod=pod(), secret=True, report=report("ended")),
        state=BotState.ENDED,
        actions=(RemoveFinalizer,),
    ),
    Case(
        "a bot that reports failed fails with the bot's reason and message",
        bot(state=BotState.JOINED, finalizer=True),
        at(60),
        Observed(
            pod=pod(), secret=True, report=report("failed", reason="BotExited", message="command exited with code 3")
        ),
        state=BotState.FAILED,
        reason="BotExited",
        actions=(RemoveFinalizer,),
        check=lambda p: "code 3" in (p.status.message or ""),
    ),
    Case(
        "a bot whose Pod failed in the meeting fails PodFailed with the exit code",
        bot(state=BotState.JOINED, finalizer=True),
        at(60),
        Observed(pod=pod(phase="Failed", ready=False, exit_code=137), secret=True, report=report("joined")),
        state=BotState.FAILED,
        reason="PodFailed",
        actions=(DisarmJoin, RemoveFinalizer),
        check=lambda p: "137" in (p.status.message or ""),
    ),
    Case(
        "a bot in the meeting longer than maxDurationSeconds is asked to leave",
        bot(state=BotState.RECORDING, finalizer=True, status={"joinedAt": iso(JOIN)}),
        at(3600),
        Observed(pod=pod(), secret=True, report=report("recording")),
        state=BotState.RECORDING,
        actions=(Leave,),
        check=lambda p: events(p) == ["MaxDurationReached"],
    ),
    Case(
        "a bot in the meeting sleeps until its maximum duration",
        bot(state=BotState.RECORDING, finalizer=True, status={"joinedAt": iso(JOIN)}),
        at(60),
        Observed(pod=pod(), secret=True, report=report("recording")),
        state=BotState.RECORDING,
        wake_at=at(3600),
    ),
    Case(
        "a deleted bot in a meeting asks the bot to leave and waits at most 30 s",
        bot(state=BotState.JOINED, finalizer=True, deleted=at(60)),
        at(61),
        Observed(pod=pod(), secret=True, report=report("joined")),
        state=BotState.JOINED,
        actions=(Leave,),
        wake_at=at(90),
        check=lambda p: events(p) == ["Cancelled"],
    ),
    Case(
        "a deleted bot whose bot has ended shows it and lets go of its finalizer",
        bot(state=BotState.LEAVING, finalizer=True, deleted=at(60)),
        at(62),
        Observed(pod=pod(), secret=True, report=report("ended")),
        state=BotState.ENDED,
        actions=(RemoveFinalizer,),
    ),
    Case(
        "a deleted bot whose bot does not leave in 30 s lets go of its finalizer anyway",
        bot(state=BotState.JOINED, finalizer=True, deleted=at(60)),
        at(90),
        Observed(pod=pod(), secret=True, report=report("joined")),
        state=BotState.JOINED,
        actions=(RemoveFinalizer,),
    ),
    Case(
        "a deleted staged bot holds no finalizer: nothing to do, the garbage collector takes its Pod",
        bot(state=BotState.STAGED, deleted=at(-60)),
        at(-59),
        Observed(pod=pod(), secret=True),
        state=BotState.STAGED,
        actions=(),
    ),
    Case(
        "an ended bot does nothing more",
        bot(state=BotState.ENDED),
        at(600),
        Observed(pod=None, secret=True),
        state=BotState.ENDED,
        actions=(),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan(case: Case) -> None:
    result = plan(bot=case.bot, observed=case.observed, defaults=DEFAULTS, now=case.now)
    assert result.status.state == case.state
    if case.reason is not None:
        assert result.status.reason == case.reason
    assert kinds(result) == case.actions
    if case.wake_at is not None:
        assert result.wake_at == case.wake_at
    if case.check is not None:
        assert case.check(result), result


def test_a_scheduled_bot_is_ready_and_a_failed_one_stalled_keeping_transition_times() -> None:
    first = plan(bot=bot(), observed=Observed(pod=None, secret=False), defaults=DEFAULTS, now=NOW).status
    conditions = {c.type: c for c in first.conditions or []}
    assert (conditions["Ready"].status, conditions["Stalled"].status) == ("True", "False")
    assert conditions["Ready"].observed_generation == 1
    staged = plan(
        bot=bot(
            state=BotState.SCHEDULED,
            status={"conditions": [c.model_dump(by_alias=True) for c in first.conditions or []]},
        ),
        observed=Observed(pod=None, secret=False),
        defaults=DEFAULTS,
        now=at(-300),
    ).status
    kept = {c.type: c for c in staged.conditions or []}
    assert kept["Ready"].last_transition_time == conditions["Ready"].last_transition_time
    failed = plan(
        bot=bot(
            state=BotState.STAGED, status={"conditions": [c.model_dump(by_alias=True) for c in staged.conditions or []]}
        ),
        observed=Observed(pod=pod(ready=False), secret=True),
        defaults=DEFAULTS,
        now=at(120),
    ).status
    flipped = {c.type: c for c in failed.conditions or []}
    assert (flipped["Ready"].status, flipped["Stalled"].status) == ("False", "True")
    assert flipped["Ready"].last_transition_time == "2026-01-01T10:12:00Z"


def test_a_spec_edit_of_an_ended_bot_is_acknowledged_with_its_generation() -> None:
    ended = bot(
        state=BotState.ENDED,
        status={
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "observedGeneration": 1,
                    "lastTransitionTime": "2026-01-01T10:00:00Z",
                    "reason": "Ended",
                    "message": "the bot left",
                }
            ],
        },
    )
    edited = BotView(**{**{f: getattr(ended, f) for f in ended.__dataclass_fields__}, "generation": 2})
    status = plan(bot=edited, observed=Observed(pod=None, secret=True), defaults=DEFAULTS, now=at(900)).status
    assert status.observed_generation == 2
    assert [c.observed_generation for c in status.conditions or []] == [2]
    assert (status.conditions or [])[0].last_transition_time == "2026-01-01T10:00:00Z"


def test_the_same_observation_gives_the_same_plan() -> None:
    """Passes are repeatable: a duplicate watch event cannot make the operator act differently."""

    def again() -> object:
        return plan(
            bot=bot(state=BotState.STAGED), observed=Observed(pod=pod(), secret=True), defaults=DEFAULTS, now=at(-10)
        )

    assert again() == again()


# Paced staging: a slot earlier than stageAt, and the warning before joinAt ---------------------

STAGE_AT = at(-300)  # JOIN - the default lead


@pytest.mark.parametrize(
    ("now", "stage_by", "staged", "wake_at"),
    [
        (at(-400), at(-450), True, None),  # the slot is due, 100 s before stageAt: staged now
        (at(-500), at(-450), False, at(-450)),  # not yet: wakes at the slot, not at stageAt
        (at(-500), None, False, STAGE_AT),  # no slot: stageAt, as without pacing
        (at(-300), at(-200), True, None),  # a slot after stageAt never delays it: the lead is a minimum
        (at(-400), at(-200), False, STAGE_AT),
    ],
)
def test_a_paced_slot_stages_earlier_than_stage_at_never_later(
    now: datetime, stage_by: datetime | None, staged: bool, wake_at: datetime | None
) -> None:
    result = plan(
        bot=bot(state=BotState.SCHEDULED),
        observed=Observed(pod=None, secret=True, stage_by=stage_by),
        defaults=DEFAULTS,
        now=now,
    )
    assert (CreatePod in kinds(result)) == staged
    assert result.status.state == (BotState.STAGED if staged else BotState.SCHEDULED)
    if wake_at is not None:
        assert result.wake_at == wake_at


@pytest.mark.parametrize(
    ("state", "observed_pod", "now", "expected", "warned"),
    [
        # Waiting for its slot, which comes too late for the Pod to be Ready by joinAt.
        (BotState.SCHEDULED, None, at(-400), at(5), True),
        # Staged now (its stageAt has come), and already expected late.
        (BotState.SCHEDULED, None, at(-100), at(5), True),
        (BotState.SCHEDULED, None, at(-400), at(-290), False),
        # Staged, its Pod not Ready and not expected Ready in time.
        (BotState.STAGED, pod(ready=False), at(-20), at(15), True),
        (BotState.STAGED, pod(ready=False), at(-20), at(-1), False),
        # After joinAt, the deadline's own failure speaks; no warning "before" any more.
        (BotState.STAGED, pod(ready=False), at(1), at(15), False),
    ],
)
def test_a_bot_pod_not_expected_ready_by_join_at_is_reported_before_it(
    state: BotState, observed_pod: PodView | None, now: datetime, expected: datetime, warned: bool
) -> None:
    result = plan(
        bot=bot(state=state),
        observed=Observed(pod=observed_pod, secret=True, stage_by=at(-95), ready_expected_at=expected),
        defaults=DEFAULTS,
        now=now,
    )
    assert ("LateStaging" in events(result)) == warned
    conditions = {c.type: c for c in result.status.conditions or []}
    if warned:
        late = conditions["ReadyBeforeJoin"]
        assert (late.status, late.reason) == ("False", "LateStaging")
        assert "not expected to be Ready by joinAt" in late.message
        assert [a.type for a in result.actions if isinstance(a, Emit) and a.reason == "LateStaging"] == ["Warning"]
    else:
        assert "ReadyBeforeJoin" not in conditions
