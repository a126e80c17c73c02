"""Quiet windows around join instants: when the deliverer keeps out of the join dispatcher's way.

Deliveries share the event loop with the join dispatcher. A delivery's own work
(building and signing the request, an answer or a timeout, then a pass that
writes the outcome) is small, but a sink that never answers makes it come in
bursts (every attempt started together times out together). So nothing of the
deliverer starts, and no outcome asks for a pass, from `before` seconds ahead of
a known joinAt to `after` seconds past it; what falls in that window waits for
its end. Windows that overlap are merged, and nothing waits more than
`longest` seconds, so that bots joining every second cannot starve the deliveries.

Pure: instants and `now` are seconds since the epoch, passed in.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Final

QUIET_BEFORE_SECONDS: Final = 1.0
QUIET_AFTER_SECONDS: Final = 0.5
LONGEST_QUIET_SECONDS: Final = 5.0


@dataclass(slots=True)
class JoinInstants:
    """The join instants of the bots that still have one ahead, one per bot."""

    before: float = QUIET_BEFORE_SECONDS
    after: float = QUIET_AFTER_SECONDS
    longest: float = LONGEST_QUIET_SECONDS
    _of: dict[Hashable, float] = field(default_factory=dict)
    _count: dict[float, int] = field(default_factory=dict)
    _sorted: list[float] = field(default_factory=list)

    def set(self, key: Hashable, at: float | None) -> None:
        """Bot `key` joins at `at`; None: it has no join ahead (joined, ended, gone)."""
        old = self._of.get(key)
        if old == at:
            return
        if old is not None:
            del self._of[key]
            self._count[old] -= 1
            if not self._count[old]:
                del self._count[old]
                self._sorted.pop(bisect.bisect_left(self._sorted, old))
        if at is not None:
            self._of[key] = at
            self._count[at] = self._count.get(at, 0) + 1
            if self._count[at] == 1:
                bisect.insort(self._sorted, at)

    def quiet_until(self, now: float) -> float | None:
        """When the quiet window around `now` ends; None if `now` is in none."""
        index = bisect.bisect_left(self._sorted, now - self.after)
        end: float | None = None
        while index < len(self._sorted) and self._sorted[index] - self.before <= (now if end is None else end):
            end = self._sorted[index] + self.after
            if end >= now + self.longest:
                return now + self.longest
            index += 1
        return end

    def __len__(self) -> int:
        return len(self._of)
