"""The engine's picture of each ScheduledBot: what the watch and the writes showed, and what is expected.

The picture is refreshed by the writes themselves (the API returns the object as
written), and a watch event older than what a write returned is ignored, so a pass
never acts twice on a transition whose watch event has not arrived yet.

Two writes answer nothing a pass could read back: a Pod's creation and its deletion.
What they promise is kept beside the watch's dicts, as expectations (`Seen.created`,
`Seen.deleting`) that runtime/views.py applies, until the Pod's next watch event: the
kept dicts themselves, which may be the watch event's own, are never written into.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from scheduledbot.api.models import ValidSpec
from scheduledbot.api.resource import API_VERSION, KIND
from scheduledbot.core.model import SignalOutcome

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Deleting:
    """A Pod whose deletion this process asked for: its uid, and since when (a timestamp)."""

    uid: str
    since: str


@dataclass(frozen=True, slots=True)
class ParsedSpec:
    """A bot's spec as parsed for one `generation` of it (the API server counts every spec change there)."""

    uid: str
    generation: int
    spec: ValidSpec | None
    #: Set instead of `spec` when it does not parse.
    error: str | None


@dataclass(slots=True)
class Seen:
    body: dict[str, Any] | None = None
    pod: dict[str, Any] | None = None
    #: The token Secret exists (created by this process, or found under its keyed name).
    secret: bool = False
    #: The Pod this process created while none was seen, until the watch brings one.
    created: dict[str, Any] | None = None
    #: The Pod this process is deleting, until the watch brings that Pod's next state.
    deleting: Deleting | None = None
    #: The Pod's first Ready was counted (the stager's pace, the staging time metric).
    staged_seen: bool = False
    #: The join dispatcher's last outcome for this bot.
    signal: SignalOutcome | None = None
    #: The spec as the last pass parsed it: a status or finalizer write leaves it as it was.
    spec: ParsedSpec | None = None


class Cache:
    def __init__(self) -> None:
        self._seen: Final[dict[Key, Seen]] = {}

    def __contains__(self, key: Key) -> bool:
        return key in self._seen

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._seen))

    def get(self, key: Key) -> Seen | None:
        return self._seen.get(key)

    def entry(self, key: Key) -> Seen:
        return self._seen.setdefault(key, Seen())

    def pop(self, key: Key) -> Seen | None:
        return self._seen.pop(key, None)

    def states(self) -> dict[str, int]:
        """How many bots are in each state (for the metrics)."""
        counts: dict[str, int] = {}
        # Called from the metrics server's thread while the loop adds and removes bots: copy
        # the values in one C-level step (the GIL is held throughout), then read the copy.
        for seen in tuple(self._seen.values()):
            state = ((seen.body or {}).get("status") or {}).get("state")
            if state:
                counts[state] = counts.get(state, 0) + 1
        return counts

    def other_object(self, key: Key, body: dict[str, Any]) -> bool:
        """Is `body` another ScheduledBot than the one kept under its name (another uid)?"""
        seen = self._seen.get(key)
        return (
            seen is not None
            and seen.body is not None
            and seen.body["metadata"].get("uid") != body["metadata"].get("uid")
        )

    def take_bot(self, key: Key, body: dict[str, Any]) -> bool:
        """Keep a watch event's ScheduledBot; False when it is older than what is kept."""
        seen = self.entry(key)
        if not newer(body, seen.body):
            return False
        seen.body = kept(body)
        return True

    def take_pod(self, seen: Seen, body: dict[str, Any]) -> bool:
        """Keep a watch event's Pod; False when it is older than what is kept."""
        if not newer(body, seen.pod):
            return False
        seen.pod = kept(body)
        seen.created = seen.deleting = None
        return True

    def pod_gone(self, seen: Seen, body: dict[str, Any]) -> bool:
        """A Pod's deletion event: True when it was the kept one."""
        if seen.pod is None or seen.pod["metadata"].get("uid") != body["metadata"].get("uid"):
            return False
        seen.pod = None
        seen.deleting = None
        return True

    @staticmethod
    def wrote(seen: Seen, written: dict[str, Any] | None) -> None:
        """A write's answer: the ScheduledBot as written, unless the watch brought a newer one."""
        if written is not None and newer(written, seen.body):
            seen.body = kept(written)


def kept(body: dict[str, Any]) -> dict[str, Any]:
    """The object as the controllers keep it: without metadata.managedFields, which nothing
    here reads and which is about half of a ScheduledBot (10,000 waiting bots: 70 MB less).

    Its other parts are new dicts whose keys and short strings are interned: a watch event's
    JSON comes with its own copy of every key ("lastTransitionTime" is 67 bytes) and of
    every repeated value (the namespace, "True", a shared joinAt), the same in each of
    10,000 bots (bench/memory.py, 10,000 waiting bots: the kept bodies 6,300 bytes per
    bot before, 3,500 after). `spec` stays the event's own dict: the BotSchedule controller
    keeps that same one (core.schedule_children.BotRef). Nothing kept is written into, and
    the event's dicts are left as they were."""
    return {
        _intern(key): value if key == "spec" else _metadata(value) if key == "metadata" else _compact(value)
        for key, value in body.items()
    }


def _metadata(meta: Any) -> Any:
    if not isinstance(meta, dict):
        return meta
    return {_intern(key): _compact(value) for key, value in meta.items() if key != "managedFields"}


#: Longer strings (a condition's message, an annotation's JSON) are rarely the same in two bots.
_INTERNED_UP_TO: Final = 128


def _compact(value: Any) -> Any:
    if isinstance(value, str):
        return _intern(value) if len(value) <= _INTERNED_UP_TO else value
    if isinstance(value, dict):
        return {_intern(key): _compact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_compact(item) for item in value]
    return value


def _intern(text: str) -> str:
    return sys.intern(text) if type(text) is str else text


def newer(body: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """Is `body` at least as new as `than`? resourceVersions are etcd revisions here."""
    if than is None:
        return True
    new, old = body["metadata"].get("resourceVersion"), than["metadata"].get("resourceVersion")
    try:
        return int(new) >= int(old)
    except (TypeError, ValueError):
        return True


def controller(pod: dict[str, Any]) -> str | None:
    """The name of the ScheduledBot that controls `pod`, if one does."""
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == KIND and ref.get("apiVersion") == API_VERSION:
            return str(ref["name"])
    return None
