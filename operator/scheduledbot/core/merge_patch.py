"""The JSON merge patch (RFC 7386) that turns one status document into another.

A merge patch merges objects key by key: a key left out of the patch is kept as
it is on the server, and only `null` removes it. So a nested key that disappeared
(the last entry of `status.notifications.pending`, a cleared retry time) must be
sent as `null` at its own depth; sending the new parent object would merge into
the old one and keep it. Arrays are replaced whole, as the RFC says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A patch that makes `old` into `new`: every key of `new`, and `null` for each key (at any depth) gone.

    `new` must hold no `null` values (they would read as removals).
    """
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    return patch
