"""Bounded waits: poll a condition until it holds, or fail naming what did not happen.

For conditions nobody announces (a port that starts listening, a process group that
is gone, a policy that takes effect). Where the API server can tell, watch instead
(`testing.Cluster` waits on a watch).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(predicate: Callable[[], T | None], *, timeout: float, interval: float = 0.1, what: str = "") -> T:
    """The first truthy value of `predicate()`, called every `interval` seconds.

    Raises TimeoutError after `timeout` seconds, naming `what` and the last value seen.
    An exception from `predicate` ends the wait at once: a predicate raises to give up
    early (say, on a process that exited while it was awaited).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{what or 'condition'}: not within {timeout:g} s (last: {value!r:.200})")
        time.sleep(min(interval, left))
