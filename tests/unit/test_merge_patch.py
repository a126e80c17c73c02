"""The status publisher's merge patch: applied as RFC 7386 says, it gives the new status, nested removals included."""

from __future__ import annotations

from typing import Any

import pytest

from rfc7386 import apply
from scheduledbot.core.merge_patch import merge_patch

CASES = [
    pytest.param({}, {"state": "scheduled"}, id="a first status"),
    pytest.param({"state": "staged", "podName": "a-bot"}, {"state": "scheduled"}, id="a top-level key gone"),
    pytest.param(
        {"notifications": {"sequence": 2, "pending": [{"sequence": 2}], "nextAttemptAt": "t"}},
        {"notifications": {"sequence": 2}},
        id="the outbox emptied and its retry time cleared",
    ),
    pytest.param(
        {"notifications": {"pending": [{"sequence": 1}, {"sequence": 2}]}},
        {"notifications": {"pending": [{"sequence": 2}]}},
        id="an array shrinks (replaced whole)",
    ),
    pytest.param({"a": {"b": {"c": 1, "d": 2}, "e": 3}}, {"a": {"b": {"c": 1}}}, id="removals at two depths at once"),
    pytest.param({"a": {"b": 1}}, {"a": 5}, id="an object becomes a scalar"),
    pytest.param({"a": 5}, {"a": {"b": 1}}, id="a scalar becomes an object"),
    pytest.param({"a": {"b": 1}}, {}, id="a whole object gone"),
]


@pytest.mark.parametrize(("old", "new"), CASES)
def test_the_patch_applied_to_the_old_status_is_the_new_one(old: dict[str, Any], new: dict[str, Any]) -> None:
    assert apply(old, merge_patch(old, new)) == new


def test_the_shallow_patch_kept_nested_keys_that_were_gone() -> None:
    # What the publisher sent before: the new top-level values, nulls only at the top.
    old = {"notifications": {"sequence": 1, "pending": [{"sequence": 1}]}}
    new = {"notifications": {"sequence": 1}}
    shallow = {k: None for k in old if k not in new} | new
    assert apply(old, shallow) != new
    assert merge_patch(old, new) == {"notifications": {"pending": None, "sequence": 1}}
