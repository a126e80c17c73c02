"""What the harness learns from its watches, kept as counters so that waits cost O(1)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any


class BotTracker:
    """ScheduledBots of one namespace: states, finalizers, and what each write changed."""

    def __init__(self) -> None:
        self.states: Counter[str] = Counter()
        self.state_of: dict[str, str] = {}
        self.with_finalizer = 0
        #: name -> time.time() when the watch first showed status.state.
        self.first_state_at: dict[str, float] = {}
        #: MODIFIED events by what changed: "status", "finalizers", "other".
        self.writes: Counter[str] = Counter()

    def on_event(self, kind: str, obj: dict[str, Any], previous: dict[str, Any] | None) -> None:
        name = obj["metadata"]["name"]
        old_state = self.state_of.pop(name, None)
        if old_state is not None:
            self.states[old_state] -= 1
        old_fin = bool(previous and previous["metadata"].get("finalizers"))
        self.with_finalizer -= old_fin
        if kind == "DELETED":
            return
        state = (obj.get("status") or {}).get("state")
        if state:
            self.state_of[name] = state
            self.states[state] += 1
            self.first_state_at.setdefault(name, time.time())
        self.with_finalizer += bool(obj["metadata"].get("finalizers"))
        if kind == "MODIFIED" and previous is not None:
            if (obj.get("status") or {}) != (previous.get("status") or {}):
                self.writes["status"] += 1
            if obj["metadata"].get("finalizers") != previous["metadata"].get("finalizers"):
                self.writes["finalizers"] += 1
            if (obj.get("status") or {}) == (previous.get("status") or {}) and obj["metadata"].get(
                "finalizers"
            ) == previous["metadata"].get("finalizers"):
                self.writes["other"] += 1

    def count(self, *states: str) -> int:
        return sum(self.states[s] for s in states)


class PodTracker:
    """Bot Pods of one namespace: which are Ready, and their addresses."""

    def __init__(self) -> None:
        self.ip_of: dict[str, str] = {}
        self.ready: set[str] = set()
        self.ready_at: dict[str, float] = {}
        self.owner_of: dict[str, str] = {}
        self.new_addresses: list[str] = []

    def on_event(self, kind: str, obj: dict[str, Any], previous: dict[str, Any] | None) -> None:
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self.ip_of.pop(name, None)
            self.ready.discard(name)
            self.owner_of.pop(name, None)
            return
        refs = obj["metadata"].get("ownerReferences") or []
        if refs:
            self.owner_of[name] = refs[0]["name"]
        status = obj.get("status") or {}
        ip = status.get("podIP")
        if ip and self.ip_of.get(name) != ip:
            self.ip_of[name] = ip
            self.new_addresses.append(ip)
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        if ready and ip:
            if name not in self.ready:
                self.ready_at[name] = time.time()
            self.ready.add(name)
        else:
            self.ready.discard(name)
