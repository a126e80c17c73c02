"""The BotClasses the operator knows: for the webhook's reviews and for staging bots.

One catalog, filled by a list before the webhook serves its first review and the
engine its first pass, and kept current by kopf's watch. A class named by a bot but
not in the catalog may have been created a moment ago, before its watch event: it
is read once from the API server before anyone concludes it does not exist.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from scheduledbot.adapters.kube import ApiError
from scheduledbot.api.botclass import BrokenClass, ValidBotClass, load_bot_class

log = logging.getLogger(__name__)


class ClassReader(Protocol):
    """The part of adapters.kube.Kube that reads a BotClass."""

    async def read_bot_class(self, name: str) -> dict[str, Any] | None: ...


class ClassCatalog:
    """The BotClasses, by name, as the last list or watch event showed them."""

    def __init__(self) -> None:
        self._classes: dict[str, ValidBotClass | BrokenClass] = {}

    def replace(self, bodies: list[dict[str, Any]]) -> None:
        self._classes = {c.name: c for c in map(load_bot_class, bodies) if c.name}

    def event(self, kind: str | None, body: Mapping[str, Any]) -> None:
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return
        if kind == "DELETED":
            self._classes.pop(name, None)
        else:
            self._classes[name] = load_bot_class(body)

    def snapshot(self) -> Mapping[str, ValidBotClass | BrokenClass]:
        return dict(self._classes)

    def knows(self, name: str) -> bool:
        return name in self._classes

    async def learn(self, name: str, kube: ClassReader) -> None:
        """Read class `name` if the catalog lacks it; an answer of the API server's is kept."""
        if self.knows(name):
            return
        try:
            found = await kube.read_bot_class(name)
        except ApiError as error:
            log.warning("could not read BotClass %r: %s", name, error)
            return
        if found is not None:
            self.event("ADDED", found)
