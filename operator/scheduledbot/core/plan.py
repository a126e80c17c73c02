"""The operator's decisions: `plan(bot, observed, defaults, now) -> Plan`.

How a pass works
================
The runtime observes (the ScheduledBot, its Pod, the bot's last state report, the
join dispatcher's last outcome), calls `plan` once with `now` read once, executes
the actions through the adapters, publishes the status if it changed, and sleeps
until `wake_at` or the next watch event. `plan` re-derives everything from what it
is shown (kopf's and kubebuilder's "react to state, not to events"), so a restart,
a duplicate event or a lost one cannot leave a bot half-done.

One transition per pass
=======================
A pass moves the state at most one step (scheduled -> staged, staged -> joining,
...) and asks to be woken at `now` when another step is due at once. Each step is
thus one status write that a `kubectl get sbot -w` user sees.

Why the join itself is not decided here
=======================================
The join signal must leave within milliseconds of `joinAt`, for a thousand bots at
once. `plan` only *arms* it (`ArmJoin`) while the bot is staged and Ready; the
runtime's dispatcher holds pre-opened connections and fires them all at the
instant, then reports the outcome, which the next pass turns into status.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduledbot.api.models import (
    IN_MEETING_STATES,
    RESCHEDULABLE_STATES,
    TERMINAL_STATES,
    BotState,
    JoinedBy,
    ScheduledBotStatus,
    ValidSpec,
)
from scheduledbot.core.children import pod_name
from scheduledbot.core.conditions import build_conditions, set_condition
from scheduledbot.core.model import (
    FINALIZER,
    LEAVE_TIMEOUT_SECONDS,
    MIN_RECOMMENDED_LEAD_SECONDS,
    POD_GONE_RECHECK_SECONDS,
    SIGNAL_RETRY_SECONDS,
    Action,
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
    EventType,
    Leave,
    MoveSelfJoin,
    Observed,
    Plan,
    PodView,
    RemoveFinalizer,
    SignalOutcome,
)
from scheduledbot.timestamps import format_time, parse_time

__all__ = ["FINALIZER", "LATE_STAGING", "plan", "request_id"]

#: The Warning Event's and the condition's reason when a bot Pod is not expected Ready by joinAt.
LATE_STAGING = "LateStaging"
#: The condition that says so, before joinAt (False while a late Pod is expected).
READY_BEFORE_JOIN = "ReadyBeforeJoin"

_BOT_STATES = {s.value for s in BotState}
#: States that mean the bot was let into the meeting: the first one seen sets joinedAt and
#: emits Joined, whether or not `joined` itself was reported (a bot may go straight to recording).
_ADMITTED = frozenset({BotState.JOINED, BotState.RECORDING})
_JOINED_EVENT = Emit(type=EventType.NORMAL, reason="Joined", message="the bot is in the meeting")


def request_id(*, uid: str, join_at: datetime) -> str:
    """The join request id: the same for the same bot and time, across restarts."""
    return f"{uid}@{format_time(join_at)}"


def plan(*, bot: BotView, observed: Observed, defaults: Defaults, now: datetime) -> Plan:
    """Decide the next step for one ScheduledBot. Pure: no clock, no I/O."""
    state = bot.status.state
    if bot.deleted_at is not None:
        return _deleting(bot, observed, now)
    if state in TERMINAL_STATES:
        return Plan(status=_observe(bot, bot.status), actions=_release_finalizer(bot))
    if bot.spec is None:
        if state in IN_MEETING_STATES:  # CEL keeps the meeting fields fixed; a bad edit elsewhere waits
            return _in_meeting(bot, _observe(bot, bot.status), observed, defaults, now)
        return _fail(bot, now, "InvalidSpec", bot.spec_error or "invalid spec", _drop_pod(observed))
    spec = bot.spec
    timing = _Timing(spec, defaults)
    if state is None:
        return _first_sight(bot, spec, timing, now)
    if state in RESCHEDULABLE_STATES:
        moved = _reschedule_note(bot, spec, timing)
        base = bot.status.model_copy(update=timing.status_fields(spec, bot.generation))
        if observed.rejection is not None:
            if observed.rejection_reason is not None:
                return _fail(bot, now, observed.rejection_reason, observed.rejection, _drop_pod(observed), base=base)
            return _fail(
                bot, now, "PodRejected", f"the API server refused the bot Pod: {observed.rejection}", (), base=base
            )
        if state is BotState.SCHEDULED:
            return _scheduled(bot, base, observed, timing, now, moved)
        return _staged(bot, base, observed, timing, now, moved)
    return _in_meeting(bot, _observe(bot, bot.status), observed, defaults, now)


class _Timing:
    """The instants of one spec: when to stage, join, and give up."""

    def __init__(self, spec: ValidSpec, defaults: Defaults) -> None:
        self.lead = _or(spec.staging_lead_seconds, defaults.staging_lead_seconds)
        self.join_at = spec.join_at
        self.stage_at = spec.join_at - timedelta(seconds=self.lead)
        self.deadline = spec.join_at + timedelta(
            seconds=_or(spec.join_deadline_seconds, defaults.join_deadline_seconds)
        )
        self.max_duration = timedelta(seconds=_or(spec.max_duration_seconds, defaults.max_duration_seconds))

    def status_fields(self, spec: ValidSpec, generation: int) -> dict[str, object]:
        return {
            "join_at": format_time(self.join_at),
            "stage_at": format_time(self.stage_at),
            "platform": spec.platform,
            "observed_generation": generation,
        }


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _first_sight(bot: BotView, spec: ValidSpec, timing: _Timing, now: datetime) -> Plan:
    """A new ScheduledBot: accept it as scheduled, or fail it if its time is gone."""
    base = bot.status.model_copy(update=timing.status_fields(spec, bot.generation))
    if timing.join_at < bot.created_at:
        # The admission webhook rejects these; this is the backstop when it was not called.
        why = (
            f"joinAt cannot be in the past: {format_time(timing.join_at)} is before the "
            f"ScheduledBot was created ({format_time(bot.created_at)})"
        )
        return _fail(bot, now, "JoinAtInPast", why, (), base=base)
    if now > timing.deadline:
        return _missed(bot, now, timing, base=base)
    actions: list[Action] = [
        Emit(
            type=EventType.NORMAL,
            reason="Scheduled",
            message=f"will stage at {format_time(timing.stage_at)} and join at {format_time(timing.join_at)}",
        )
    ]
    # The lead the bot really gets: a bot created closer to joinAt than its lead is staged at once.
    lead = (timing.join_at - max(now, timing.stage_at)).total_seconds()
    if lead < MIN_RECOMMENDED_LEAD_SECONDS:
        actions.append(
            Emit(
                type=EventType.WARNING,
                reason="ShortLead",
                message=(
                    f"the bot Pod gets {lead:.0f} s before joinAt (under {MIN_RECOMMENDED_LEAD_SECONDS} s) "
                    f"and may not be warm in time; staging {'at once' if timing.stage_at <= now else 'at stageAt'}"
                ),
            )
        )
    status = _with_state(
        bot,
        base,
        BotState.SCHEDULED,
        now,
        "Scheduled",
        f"joins at {format_time(timing.join_at)}",
        scheduled_at=format_time(now),
    )
    return Plan(status=status, actions=tuple(actions), wake_at=max(now, timing.stage_at))


def _reschedule_note(bot: BotView, spec: ValidSpec, timing: _Timing) -> Emit | None:
    old = bot.status.join_at
    new = format_time(spec.join_at)
    if old is None or old == new:
        return None
    return Emit(type=EventType.NORMAL, reason="Rescheduled", message=f"joinAt moved from {old} to {new}")


def _scheduled(
    bot: BotView, base: ScheduledBotStatus, observed: Observed, timing: _Timing, now: datetime, moved: Emit | None
) -> Plan:
    notes: tuple[Action, ...] = (moved,) if moved else ()
    pod = observed.pod
    # Paced staging may start earlier than stageAt (the lead is a minimum), never later.
    start = timing.stage_at if observed.stage_by is None else min(timing.stage_at, observed.stage_by)
    # A live Pod made for this very join (same time, same meeting) is this bot's whenever it was
    # created: staging early is never wrong, and after a restart the pace that created it early
    # is not known yet.
    adopt = pod is not None and _made_for(pod, bot, timing)
    if now > timing.deadline and not adopt:
        return _missed(bot, now, timing, base=base)
    if pod is not None and not adopt:
        # A Pod released by a reschedule that has not gone yet: finish releasing it, then
        # wait for its DELETED event (the name is taken until then), not for "now".
        drop = () if pod.deleting else (DeletePod(uid=pod.uid),)
        return Plan(status=base, actions=notes + drop, wake_at=_after_deletion(pod, timing, now))
    if now < start and not adopt:
        base, late = _late_staging(bot, base, observed, timing, now)
        return Plan(status=base, actions=notes + late, wake_at=start)
    actions: list[Action] = list(notes)
    if not observed.secret:
        actions.append(CreateSecret())
    if adopt:
        # Created for this very join by a pass whose `staged` write was lost (the operator
        # killed in between, or the write failed): the same Pod, not a second one.
        message = f"bot Pod {_pod_name(bot)} found and adopted; joins at {format_time(timing.join_at)}"
    else:
        actions.append(CreatePod(join_at=timing.join_at))
        message = f"bot Pod {_pod_name(bot)} created; joins at {format_time(timing.join_at)}"
    actions.append(Emit(type=EventType.NORMAL, reason="Staged", message=message))
    status = _with_state(
        bot,
        base,
        BotState.STAGED,
        now,
        "Staged",
        "bot Pod created, warming up",
        pod_name=_pod_name(bot),
        staged_at=format_time(now),
    )
    status, late = _late_staging(bot, status, observed, timing, now)
    return Plan(status=status, actions=(*actions, *late), wake_at=timing.deadline)


def _staged(
    bot: BotView, base: ScheduledBotStatus, observed: Observed, timing: _Timing, now: datetime, moved: Emit | None
) -> Plan:
    pod = observed.pod
    notes: list[Action] = [moved] if moved else []
    if moved is not None and now < timing.stage_at:
        # The new time is beyond the lead: release the Pod and wait to stage again.
        notes.append(DisarmJoin())
        if pod is not None and not pod.deleting:
            notes.append(DeletePod(uid=pod.uid))
        status = _with_state(
            bot,
            base,
            BotState.SCHEDULED,
            now,
            "Rescheduled",
            f"bot Pod released; stages again at {format_time(timing.stage_at)}",
            pod_name=None,
            staged_at=None,
        )
        return Plan(status=status, actions=tuple(notes), wake_at=timing.stage_at)
    joined = _joined_plan(bot, base, observed, timing, now)
    if joined is not None:
        return joined
    signal = observed.signal
    if pod is not None and not pod.deleting and _meeting_moved(pod, bot, signal, timing):
        # The Pod's safety net and environment name the old meeting: a new Pod for the new
        # one (the old one never joined: no signal went out for this join, no report says so).
        notes += [
            DisarmJoin(),
            DeletePod(uid=pod.uid),
            Emit(
                type=EventType.WARNING,
                reason="PodReplaced",
                message=f"meetingUrl changed before joinAt; replacing bot Pod {pod.name}",
            ),
        ]
        return Plan(status=base, actions=tuple(notes), wake_at=_after_deletion(pod, timing, now))
    if moved is not None and pod is not None and pod.ready and pod.ip:
        notes.append(MoveSelfJoin(join_at=timing.join_at, address=_address(pod)))
    if signal is not None and signal.error and signal.join_at == timing.join_at:
        if now >= timing.deadline:
            return _fail(
                bot,
                now,
                "SignalFailed",
                f"the join signal could not reach the bot: {signal.error}",
                _drop_pod(observed),
                base=base,
            )
        notes.append(Emit(type=EventType.WARNING, reason="SignalFailed", message=signal.error))
    if pod is None:
        if now >= timing.deadline:
            return _missed(bot, now, timing, base=base)
        notes.append(CreatePod(join_at=timing.join_at))
        notes.append(
            Emit(
                type=EventType.WARNING,
                reason="PodRecreated",
                message=f"bot Pod {_pod_name(bot)} was deleted before joinAt; created it again",
            )
        )
        return Plan(status=base, actions=tuple(notes), wake_at=timing.deadline)
    if pod.deleting:
        return Plan(status=base, actions=tuple(notes), wake_at=timing.deadline)
    if pod.finished:
        if _died_unjoined(pod, observed, timing) and now < timing.deadline:
            # Its process died before any join could start: the signal was never sent and
            # the Pod's own timer fires only after joinAt. A new Pod cannot make a second
            # join, so replace this one (the next pass after its DELETED event creates it).
            notes += [
                DisarmJoin(),
                DeletePod(uid=pod.uid),
                Emit(
                    type=EventType.WARNING,
                    reason="PodReplaced",
                    message=f"bot Pod {pod.name} exited before joinAt{_code(pod.exit_code)}; replacing it",
                ),
            ]
            return Plan(status=base, actions=tuple(notes), wake_at=_after_deletion(pod, timing, now))
        return _fail(
            bot,
            now,
            "BotExited",
            f"bot Pod {pod.name} exited before joining{_code(pod.exit_code)}",
            tuple(notes),
            base=base,
        )
    if not pod.ready or not pod.ip:
        base, late = _late_staging(bot, base, observed, timing, now)
        notes.extend(late)
        if now >= timing.deadline:
            why = f"bot Pod {pod.name} was not Ready by {format_time(timing.deadline)}"
            if pod.waiting_reason:
                why += f": {pod.waiting_reason}"
                if pod.waiting_message:
                    why += f" ({pod.waiting_message})"
            return _fail(bot, now, "NotReadyInTime", why, (DeletePod(uid=pod.uid),), base=base)
        return Plan(status=base, actions=tuple(notes), wake_at=timing.deadline)
    address = _address(pod)
    if now >= timing.deadline and (signal is None or signal.sent_at is None):
        if observed.report is None and observed.state_error is None:
            # The operator was away over the deadline: the bot's own safety net may have
            # joined meanwhile. Its state decides (its answer or its failure runs the next pass).
            return Plan(status=base, actions=tuple(notes), follow=address)
        # Too late to join, and the bot says it has not (or cannot be asked).
        return _missed(bot, now, timing, base=base, cause=observed.state_error)
    if now >= timing.deadline and signal is not None and signal.sent_at is not None:
        # The signal went out, yet by the deadline the bot has not said it is joining (a bot
        # that gave up says so, above). Waiting longer could only spin: its word decides.
        if observed.report is None and observed.state_error is None:
            return Plan(status=base, actions=tuple(notes), follow=address)
        said = (
            f"its state could not be read: {observed.state_error}"
            if observed.state_error is not None
            else f"it says {observed.report.state if observed.report else 'nothing'}"
        )
        why = (
            f"the join signal went out at {format_time(signal.sent_at)}, but by the join deadline "
            f"{format_time(timing.deadline)} the bot had not said it joined ({said})"
        )
        return _fail(bot, now, "NoJoinAnswer", why, _drop_pod(observed), base=base)
    retry = signal is not None and signal.error is not None and signal.join_at == timing.join_at
    notes.append(
        ArmJoin(
            join_at=timing.join_at,
            address=address,
            request_id=request_id(uid=bot.uid, join_at=timing.join_at),
            not_before=now + timedelta(seconds=SIGNAL_RETRY_SECONDS) if retry else None,
        )
    )
    return Plan(status=base, actions=tuple(notes), wake_at=timing.deadline, follow=address)


def _late_staging(
    bot: BotView, base: ScheduledBotStatus, observed: Observed, timing: _Timing, now: datetime
) -> tuple[ScheduledBotStatus, tuple[Action, ...]]:
    """Before joinAt, say so when the bot Pod is not expected Ready by then (condition, Warning)."""
    expected = observed.ready_expected_at
    if expected is None or expected <= timing.join_at or now >= timing.join_at:
        return base, ()
    # No expected time in the text: it moves from pass to pass, and each change would be a write.
    message = (
        f"bot Pod {_pod_name(bot)} is not expected to be Ready by joinAt {format_time(timing.join_at)}; "
        "the bot may join late or miss the meeting"
    )
    conditions = set_condition(
        base.conditions or [],
        type_=READY_BEFORE_JOIN,
        true=False,
        reason=LATE_STAGING,
        message=message,
        generation=bot.generation,
        now=now,
    )
    warning = Emit(type=EventType.WARNING, reason=LATE_STAGING, message=message)
    return base.model_copy(update={"conditions": conditions}), (warning,)


def _joined_plan(
    bot: BotView, base: ScheduledBotStatus, observed: Observed, timing: _Timing, now: datetime
) -> Plan | None:
    """Staged -> joining, once the bot says it is joining (or further).

    The bot's own word decides, not the dispatcher's write: its answer to the
    signal arrives milliseconds after the signal, and only the bot knows whether
    it joined by the signal or, while the operator was away, by its own deadline.
    """
    signal, report, pod = observed.signal, observed.report, observed.pod
    if report is None or not report.in_meeting_or_after:
        return None
    if report.state in ("failed", "ended"):
        # Over before it began: e.g. the Pod's deadline passed with no signal (Missed).
        why = report.reason or ("BotFailed" if report.state == "failed" else "Ended")
        text = report.message or f"the bot {report.state} before joining"
        if report.state == "failed":
            return _fail(bot, now, why, text, (), base=base)
        status = _with_state(bot, base, BotState.ENDED, now, why, text, ended_at=format_time(report.since or now))
        return Plan(status=status, actions=(DisarmJoin(), Emit(type=EventType.NORMAL, reason="Ended", message=text)))
    sent_at = (
        signal.sent_at if signal is not None and signal.error is None and signal.join_at == timing.join_at else None
    )
    by = report.joined_by or JoinedBy.SIGNAL
    fields: dict[str, object] = {"joined_by": by}
    if by is JoinedBy.DEADLINE:
        reason, message = "JoinedByDeadline", "no join signal reached the bot in time; it joined on its own"
        event = Emit(type=EventType.WARNING, reason=reason, message=message)
        # When the bot started its join; `since` is its latest change, later once it is in the meeting.
        started = report.join_started_at or (report.since if report.state == "joining" else None)
        if started is not None:
            fields["join_lateness_ms"] = _ms(started - timing.join_at)
    elif sent_at is not None:
        # The bot's own start of its join when it says (a restarted operator's signal may
        # reach a bot that joined by an earlier one: the bot answers with that join), else
        # the signal's send time.
        started = report.join_started_at if report.join_started_at is not None else sent_at
        lateness = _ms(started - timing.join_at)
        fields |= {"join_signaled_at": format_time(sent_at), "join_lateness_ms": lateness}
        reason, message = "JoinSignaled", f"join signal sent {_ms(sent_at - timing.join_at)} ms after joinAt"
        event = Emit(type=EventType.NORMAL, reason=reason, message=message)
    else:
        # Signalled before a restart that lost the send record: the bot says so itself.
        reason, message = "JoinSignaled", "the bot had been signalled before the operator restarted"
        event = Emit(type=EventType.NORMAL, reason=reason, message=message)
    address = _address(pod) if pod is not None and pod.ip else None
    state = _reported_state(report, BotState.JOINING)
    admitted: tuple[Action, ...] = ()
    if state in _ADMITTED:
        # First seen already in the meeting (say, after a restart): the admission is now.
        fields["joined_at"] = format_time(report.since or now)
        admitted = (_JOINED_EVENT,)
    status = _with_state(bot, base, state, now, reason, message, **fields)
    # No finalizer in this write's pass: at a join instant a thousand bots become joining at
    # once, and each status is what `kubectl get sbot` waits for. The next pass (`wake_at`
    # now, queued behind the cohort's other passes) adds it (`_in_meeting`).
    return Plan(status=status, actions=(DisarmJoin(), event, *admitted), wake_at=now, follow=address)


def _in_meeting(bot: BotView, base: ScheduledBotStatus, observed: Observed, defaults: Defaults, now: datetime) -> Plan:
    state = base.state
    pod = observed.pod
    address = _address(pod) if pod is not None and pod.ip and not pod.finished else None
    report = observed.report
    actions: list[Action] = []
    if not bot.has_finalizer:
        actions.append(AddFinalizer())
    if report is not None and report.joined_by is not None and report.joined_by != base.joined_by:
        # The bot knows best how it joined (a signal may have raced its own deadline).
        base = base.model_copy(update={"joined_by": report.joined_by})
    if report is not None and report.state in _BOT_STATES and report.state != state:
        new = BotState(report.state)
        fields: dict[str, object] = {}
        if new in _ADMITTED and base.joined_at is None:
            fields["joined_at"] = format_time(report.since or now)
            actions.append(_JOINED_EVENT)
        if new in TERMINAL_STATES:
            fields["ended_at"] = format_time(report.since or now)
        if new is BotState.FAILED:
            why = report.reason or "BotFailed"
            text = report.message or "the bot reported a failure"
            actions.append(Emit(type=EventType.WARNING, reason="Failed", message=f"{why}: {text}"))
            actions.append(RemoveFinalizer())
            return Plan(status=_with_state(bot, base, new, now, why, text, **fields), actions=tuple(actions))
        if new is BotState.ENDED:
            actions.append(Emit(type=EventType.NORMAL, reason="Ended", message=report.message or "the bot left"))
            actions.append(RemoveFinalizer())
            return Plan(
                status=_with_state(bot, base, new, now, "Ended", report.message or "the bot left", **fields),
                actions=tuple(actions),
            )
        status = _with_state(bot, base, new, now, _camel(new), report.message or f"the bot is {new.value}", **fields)
        return Plan(status=status, actions=tuple(actions), wake_at=now, follow=address)
    if pod is None or pod.finished:
        code = pod.exit_code if pod is not None else None
        if pod is not None and pod.phase == "Succeeded":
            return Plan(
                status=_with_state(
                    bot, base, BotState.ENDED, now, "Ended", "the bot Pod completed", ended_at=format_time(now)
                ),
                actions=(*actions, RemoveFinalizer()),
            )
        why = f"bot Pod {_pod_name(bot)} {'is gone' if pod is None else 'failed'}{_code(code)}"
        return _fail(bot, now, "PodFailed", why, tuple(actions), base=base)
    wake_at: datetime | None = None
    if base.joined_at is not None and state is not BotState.LEAVING:
        spec = bot.spec
        max_seconds = _or(spec.max_duration_seconds if spec else None, defaults.max_duration_seconds)
        until = _parse(base.joined_at) + timedelta(seconds=max_seconds)
        if now >= until and address is not None:
            actions.append(Leave(address=address, reason="maxDurationSeconds reached"))
            actions.append(
                Emit(
                    type=EventType.WARNING,
                    reason="MaxDurationReached",
                    message=f"in the meeting for {max_seconds} s; asked the bot to leave",
                )
            )
        else:
            wake_at = until
    return Plan(status=base, actions=tuple(actions), wake_at=wake_at, follow=address)


def _deleting(bot: BotView, observed: Observed, now: datetime) -> Plan:
    """Deletion cancels. Only a bot in a meeting holds a finalizer: it leaves first."""
    if not bot.has_finalizer:
        return Plan(status=bot.status)
    pod = observed.pod
    report = observed.report
    gone = pod is None or pod.finished or (report is not None and report.state in ("ended", "failed"))
    assert bot.deleted_at is not None
    give_up = bot.deleted_at + timedelta(seconds=LEAVE_TIMEOUT_SECONDS)
    status = bot.status
    if report is not None and report.state in _BOT_STATES and report.state != status.state:
        # Still shown while it leaves: `kubectl get sbot -w` sees leaving, then ended.
        new = BotState(report.state)
        status = _with_state(bot, status, new, now, _camel(new), report.message or f"the bot is {new.value}")
    if bot.status.state in IN_MEETING_STATES and not gone and now < give_up and pod is not None and pod.ip:
        address = _address(pod)
        return Plan(
            status=status,
            actions=(
                Leave(address=address, reason="ScheduledBot deleted"),
                Emit(
                    type=EventType.NORMAL,
                    reason="Cancelled",
                    message="deleted during the meeting; asked the bot to leave",
                ),
            ),
            wake_at=give_up,
            follow=address,
        )
    return Plan(status=status, actions=(RemoveFinalizer(),))


def _missed(
    bot: BotView, now: datetime, timing: _Timing, *, base: ScheduledBotStatus, cause: str | None = None
) -> Plan:
    why = (
        f"the operator could not act before the join deadline {format_time(timing.deadline)} "
        f"(joinAt {format_time(timing.join_at)})"
    )
    if cause is not None:
        why += f", and the bot's state could not be read: {cause}"
    return _fail(bot, now, "Missed", why, (), base=base)


def _made_for(pod: PodView, bot: BotView, timing: _Timing) -> bool:
    """Is this live Pod the one this spec would create now (same join time, same meeting)?"""
    spec = bot.spec
    return (
        not pod.deleting
        and not pod.finished
        and pod.join_at == timing.join_at
        and spec is not None
        and pod.meeting_url in (None, spec.meeting_url)
    )


def _meeting_moved(pod: PodView, bot: BotView, signal: SignalOutcome | None, timing: _Timing) -> bool:
    """Was the Pod made for another meeting than the spec's, and has no join been signalled?"""
    sent = signal is not None and signal.sent_at is not None and signal.join_at == timing.join_at
    return not sent and bot.spec is not None and pod.meeting_url is not None and pod.meeting_url != bot.spec.meeting_url


def _died_unjoined(pod: PodView, observed: Observed, timing: _Timing) -> bool:
    """Did this finished Pod's bot warm up, then die before it could have joined?

    Warmed up: it reported `ready` (a bot that cannot even start fails BotExited, rather
    than being replaced again and again). Not joined: no signal went out for this join,
    its report shows none, and its container ended before joinAt, by the node's clock,
    the one its own timer runs on.
    """
    signal, report = observed.signal, observed.report
    sent = signal is not None and signal.sent_at is not None and signal.join_at == timing.join_at
    return (
        not sent
        and report is not None
        and report.state == "ready"
        and pod.finished_at is not None
        and pod.finished_at < timing.join_at
    )


def _after_deletion(pod: PodView, timing: _Timing, now: datetime) -> datetime:
    """When to look again at a Pod on its way out, should its DELETED event not come.

    The event is what ends the wait; this is the bounded fallback: a while after the
    Pod's own deletion deadline, never before stageAt, never after the join deadline.
    """
    recheck = max(now, pod.gone_by or now) + timedelta(seconds=POD_GONE_RECHECK_SECONDS)
    return min(max(timing.stage_at, recheck), timing.deadline)


def _fail(
    bot: BotView,
    now: datetime,
    reason: str,
    message: str,
    actions: tuple[Action, ...],
    *,
    base: ScheduledBotStatus | None = None,
) -> Plan:
    status = _with_state(bot, base or bot.status, BotState.FAILED, now, reason, message, ended_at=format_time(now))
    return Plan(
        status=status,
        actions=(
            *actions,
            DisarmJoin(),
            *_release_finalizer(bot),
            Emit(type=EventType.WARNING, reason="Failed", message=f"{reason}: {message}"),
        ),
    )


def _observe(bot: BotView, status: ScheduledBotStatus) -> ScheduledBotStatus:
    """The status, acknowledging the current generation (kstatus: a spec edit was seen)."""
    if status.observed_generation == bot.generation:
        return status
    conditions = [c.model_copy(update={"observed_generation": bot.generation}) for c in status.conditions or []]
    return status.model_copy(update={"observed_generation": bot.generation, "conditions": conditions or None})


def _release_finalizer(bot: BotView) -> tuple[Action, ...]:
    return (RemoveFinalizer(),) if bot.has_finalizer else ()


def _drop_pod(observed: Observed) -> tuple[Action, ...]:
    pod = observed.pod
    return (DeletePod(uid=pod.uid),) if pod is not None and not pod.deleting else ()


def _with_state(
    bot: BotView, base: ScheduledBotStatus, state: BotState, now: datetime, reason: str, message: str, **fields: object
) -> ScheduledBotStatus:
    conditions = build_conditions(
        state=state, reason=reason, message=message, generation=bot.generation, previous=base.conditions or [], now=now
    )
    return base.model_copy(
        update={
            "state": state,
            "reason": reason,
            "message": message,
            "observed_generation": bot.generation,
            "conditions": conditions,
            **fields,
        }
    )


def _reported_state(report: BotReport, default: BotState) -> BotState:
    return BotState(report.state) if report.state in _BOT_STATES else default


def _camel(state: BotState) -> str:
    return "".join(part.capitalize() for part in state.value.split("_"))


def _pod_name(bot: BotView) -> str:
    return pod_name(bot.name)


def _address(pod: PodView) -> str:
    return f"{pod.ip}:{pod.control_port}"


def _code(code: int | None) -> str:
    return "" if code is None else f" with exit code {code}"


def _ms(delta: timedelta) -> int:
    return round(delta.total_seconds() * 1000)


def _parse(text: str) -> datetime:
    return parse_time(text)
