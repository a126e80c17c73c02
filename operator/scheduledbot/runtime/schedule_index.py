"""The BotSchedule controller's picture of the ScheduledBots of each namespace, as the planner sees them.

Every bot of a namespace as a `BotRef`; the same by controlling schedule (its
controller ownerReference, never its name alone); and the namespace's
`MeetingIndex`: kept as bots come and go, so that a pass costs what its schedule
has, not what its namespace has.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

from scheduledbot.api.models import TERMINAL_STATES
from scheduledbot.core.schedule_children import BotRef, observe_bot
from scheduledbot.core.schedule_plan import meeting_key

Key = tuple[str, str]
#: A bot's place in the index before and after a watch event or a write (None: absent).
Change = tuple[BotRef | None, BotRef | None]


def object_key(body: dict[str, Any]) -> Key:
    return str(body["metadata"]["namespace"]), str(body["metadata"]["name"])


class BotIndex:
    def __init__(self) -> None:
        self._bots: Final[dict[str, dict[str, BotRef]]] = {}
        self._owned: Final[dict[Key, dict[str, BotRef]]] = {}
        self._meetings: Final[dict[str, dict[tuple[str, int], dict[str, BotRef]]]] = {}

    def get(self, namespace: str, name: str) -> BotRef | None:
        return self._bots.get(namespace, {}).get(name)

    def children(self, schedule: Key) -> list[BotRef]:
        """The bots `schedule` controls."""
        return list(self._owned.get(schedule, {}).values())

    def meetings(self, namespace: str) -> dict[tuple[str, int], dict[str, BotRef]]:
        """The namespace's `MeetingIndex` (the live one: copy it before handing it to another thread)."""
        return self._meetings.get(namespace, {})

    def event(self, kind: str | None, body: dict[str, Any]) -> Change | None:
        """A ScheduledBot's watch event applied; None when nothing a plan reads has changed."""
        namespace, name = object_key(body)
        before = self.get(namespace, name)
        if kind == "DELETED":
            if before is None or before.uid != body["metadata"].get("uid"):
                return None
            after: BotRef | None = None
        else:
            after = observe_bot(body)
            if after == before:
                if before is not None and after.spec is not before.spec:
                    # The same for every plan, but the newest event's spec is the one the engine keeps:
                    # that one, not the start-up list's beside it (a spec dict and its strings: ~600 bytes a bot).
                    self.put(namespace, name, after)
                return None  # nothing a plan reads has changed (the list at start-up, a status detail)
        self.put(namespace, name, after)
        return before, after

    def wrote(self, namespace: str, name: str, written: dict[str, Any] | None) -> None:
        """What the API answered to a creation or a patch (None: nothing to read back)."""
        if written is not None:
            self.put(namespace, name, observe_bot(written))

    def deleting(self, namespace: str, name: str, uid: str) -> None:
        """Its deletion was asked for: until the watch shows it gone, it is on its way out."""
        known = self.get(namespace, name)
        if known is not None and known.uid == uid:
            self.put(namespace, name, replace(known, deleting=True))

    def put(self, namespace: str, name: str, bot: BotRef | None) -> None:
        """Put `bot` (None: remove it) where the passes look it up."""
        bots = self._bots.setdefault(namespace, {})
        meetings = self._meetings.setdefault(namespace, {})
        before = bots.pop(name, None)
        if before is not None:
            if before.schedule_name is not None:
                self._owned.get((namespace, before.schedule_name), {}).pop(name, None)
            key = meeting_key(before)
            if key is not None and key in meetings:
                meetings[key].pop(name, None)
                if not meetings[key]:
                    del meetings[key]
        if bot is None:
            return
        bots[name] = bot
        if bot.schedule_name is not None:
            self._owned.setdefault((namespace, bot.schedule_name), {})[name] = bot
        key = meeting_key(bot)
        if key is not None:
            meetings.setdefault(key, {})[name] = bot


def matters_to_others(change: Change) -> bool:
    """Whether a hand-written bot's change can change another bot's duplicate verdict."""
    before, after = change
    if before is None or after is None:
        return True
    return (before.meeting_url, before.join_at, before.deleting, before.state in TERMINAL_STATES) != (
        after.meeting_url,
        after.join_at,
        after.deleting,
        after.state in TERMINAL_STATES,
    )
