"""Carrying out a BotSchedule pass's actions: its children created, patched and deleted, its Events said.

The writes are idempotent: children are created under their occurrence's name
(AlreadyExists is success), patched and deleted with a precondition on the uid
the pass saw. What they answer goes into the index at once, so that the next
pass sees it before its watch event comes.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from typing import Final

from scheduledbot.adapters.kube import ApiError, Kube
from scheduledbot.core.model import Emit, EventType
from scheduledbot.core.schedule_model import CreateChild, DeleteChild, PatchChild, ScheduleAction
from scheduledbot.runtime.schedule_index import BotIndex
from scheduledbot.runtime.schedule_publisher import ScheduleEntry, SchedulePublisher

log = logging.getLogger(__name__)

#: API answers to a child's creation or patch that no retry can change.
_REFUSALS: Final = frozenset({400, 403, 422})


class ChildActions:
    def __init__(self, *, kube: Kube, index: BotIndex, publisher: SchedulePublisher, counts: Counter[str]) -> None:
        self._kube: Final = kube
        self._index: Final = index
        self._publisher: Final = publisher
        self._counts: Final = counts

    async def act(self, entry: ScheduleEntry, action: ScheduleAction, now: datetime) -> None:
        """One action of `entry`'s pass: a refusal for good is said, not raised."""
        try:
            await self._act(entry, action, now)
        except ApiError as error:
            if error.status not in _REFUSALS or not isinstance(action, CreateChild | PatchChild):
                raise
            # Refused for good (a quota, a policy, the ScheduledBot webhook): said, not retried in a loop;
            # the next pass (an event, the next wake-up) tries again.
            name = action.body["metadata"]["name"] if isinstance(action, CreateChild) else action.name
            message = f"ScheduledBot {name} was refused by the API server: {error.message}"
            refused = Emit(type=EventType.WARNING, reason="ChildRefused", message=message[:1024])
            await self._publisher.say(entry, refused, now)

    async def _act(self, entry: ScheduleEntry, action: ScheduleAction, now: datetime) -> None:
        namespace, schedule = entry.key
        match action:
            case CreateChild(body=child):
                name = child["metadata"]["name"]
                if self._index.get(namespace, name) is not None:
                    # Same name, not this schedule's child (the planner knows its own): never adopted.
                    taken = Emit(type=EventType.WARNING, reason="NameTaken", message=_taken(name))
                    await self._publisher.say(entry, taken, now)
                    return
                written = await self._kube.create_bot(namespace, dict(child))
                self._counts["creates"] += 1
                self._index.wrote(namespace, name, written)
                if written is not None:
                    log.info("BotSchedule %s/%s created ScheduledBot %s", namespace, schedule, name)
            case PatchChild(name=name, uid=uid, spec=spec, annotations=annotations):
                written = await self._kube.patch_bot_spec(
                    namespace, name, uid=uid, spec=dict(spec), annotations=annotations
                )
                self._counts["patches"] += 1
                self._index.wrote(namespace, name, written)
            case DeleteChild(name=name, uid=uid, reason=reason):
                await self._kube.delete_bot(namespace, name, uid=uid)
                self._counts["deletes"] += 1
                log.info("BotSchedule %s/%s deleted ScheduledBot %s: %s", namespace, schedule, name, reason)
                self._index.deleting(namespace, name, uid)
            case Emit():
                await self._publisher.say(entry, action, now)


def _taken(name: str) -> str:
    return (
        f"ScheduledBot {name} exists and was not created by this schedule: it is left alone and its "
        "occurrence gets no bot until it is renamed or deleted"
    )
