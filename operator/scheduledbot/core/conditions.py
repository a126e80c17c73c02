"""Status conditions in the `metav1.Condition` shape, as kstatus reads them.

Why these three
===============
kstatus (Flux, `kubectl wait`, Argo CD's generic checks) understands `Ready`,
`Reconciling` and `Stalled`. A bot that is correctly scheduled or staged is
*Ready*: its desired state (a bot that will join at `joinAt`) is in place, and a
GitOps sync must not wait hours for the meeting to start. A failed bot is
*Stalled*: nothing the operator does will make progress without a spec change.
`Reconciling` is True only for the short moment between a spec change and the
pass that acts on it, which the operator never publishes, so it stays False.

`lastTransitionTime` changes only when a condition's status flips (cert-manager's
rule), so that watchers can tell how long a condition has held.
"""

from __future__ import annotations

from datetime import datetime

from scheduledbot.api.models import BotState, Condition, ConditionStatus
from scheduledbot.timestamps import format_time


def build_conditions(
    *,
    state: BotState,
    reason: str,
    message: str,
    generation: int,
    previous: tuple[Condition, ...] | list[Condition],
    now: datetime,
) -> list[Condition]:
    failed = state is BotState.FAILED
    wanted = [
        ("Ready", not failed, reason, message),
        ("Reconciling", False, reason, message),
        ("Stalled", failed, reason, message),
    ]
    earlier = {c.type: c for c in previous}
    out = []
    for type_, true, why, text in wanted:
        status = ConditionStatus.TRUE if true else ConditionStatus.FALSE
        before = earlier.get(type_)
        since = before.last_transition_time if before and before.status == status else format_time(now)
        out.append(
            Condition(
                type=type_,
                status=status,
                observed_generation=generation,
                last_transition_time=since,
                reason=why,
                message=text,
            )
        )
    return out


def set_condition(
    previous: tuple[Condition, ...] | list[Condition],
    *,
    type_: str,
    true: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """`previous` with one condition set (added, or replaced in place), by the same transition rule."""
    status = ConditionStatus.TRUE if true else ConditionStatus.FALSE
    before = next((c for c in previous if c.type == type_), None)
    since = before.last_transition_time if before and before.status == status else format_time(now)
    new = Condition(
        type=type_,
        status=status,
        observed_generation=generation,
        last_transition_time=since,
        reason=reason,
        message=message,
    )
    if before is None:
        return [*previous, new]
    return [new if c.type == type_ else c for c in previous]
