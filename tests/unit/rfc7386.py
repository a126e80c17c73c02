"""JSON merge patches (RFC 7386) applied as the API server applies them, for the tests that check a patch."""

from __future__ import annotations

from typing import Any


def apply(target: Any, patch: Any) -> Any:
    """RFC 7386, section 2, as the API server applies an application/merge-patch+json body."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply(result.get(key), value)
    return result
