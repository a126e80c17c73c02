"""Limits on what users write: characters a name may hold, and the size of free-form objects.

Why control and bidi characters are refused
===========================================
A bot's name is shown to every participant of a meeting, written into status,
Events and logs, and passed to the bot's command in its environment. A NUL ends it
early for C programs, a newline forges a line in a text log, ESC drives a
terminal, and a bidirectional override (U+202E) makes a name read backwards.
None has a use in a display name, so such names are refused at the door: by a
CEL rule in the CRD (the API server, operator or not) and by `parse_spec`.

Why sizes are checked in Python as well as in the schema
========================================================
CEL cannot see inside an object that keeps unknown fields (`botConfig`, most of
`template`): the API server hides such fields from CEL. The schema caps what it
can (the number of top-level `botConfig` keys, the number of containers); the
serialized size and the nesting depth are checked by `parse_spec`, which both the
admission webhook and the operator's pass run, so an object the webhook never saw
is failed at once by the operator instead of reaching a Pod.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from pydantic.config import JsonDict

from scheduledbot.api.errors import FieldError

#: C0 and C1 control characters, DEL, the bidirectional marks, embeddings, overrides and
#: isolates, and the Unicode line and paragraph separators. RE2 syntax (the API server's
#: regular expressions), which Python's `re` does not read: see `UNSAFE_CHARACTERS`.
UNSAFE_CHARACTER_CLASS_RE2: Final = r"\x00-\x1F\x7F-\x9F\x{061C}\x{200E}\x{200F}\x{2028}-\x{202E}\x{2066}-\x{2069}"
#: The same class for Python.
UNSAFE_CHARACTERS: Final = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
SAFE_TEXT_MESSAGE: Final = "must not contain control characters, line separators or bidirectional-override characters"

#: BOT_CONFIG is one environment variable; Linux refuses a single one over 128 KiB
#: ("argument list too long"), and no bot needs a fraction of that.
MAX_BOT_CONFIG_BYTES: Final = 32 * 1024
MAX_BOT_CONFIG_DEPTH: Final = 16
MAX_BOT_CONFIG_KEYS: Final = 64
#: A Pod template is a few KiB; this leaves room for long commands and many variables.
MAX_TEMPLATE_BYTES: Final = 64 * 1024
MAX_TEMPLATE_DEPTH: Final = 32


def safe_text_rule() -> JsonDict:
    """The CEL rule for a string field that must hold no unsafe character."""
    return {"rule": f"self.matches(r'^[^{UNSAFE_CHARACTER_CLASS_RE2}]*$')", "message": SAFE_TEXT_MESSAGE}


def unsafe_character(text: str) -> str | None:
    """The first unsafe character of `text`, as U+XXXX, or None."""
    found = UNSAFE_CHARACTERS.search(text)
    return f"U+{ord(found.group()):04X}" if found else None


def escaped(text: str, *, limit: int) -> str:
    """`text` safe for status, Events and one log line: unsafe characters as `\\uXXXX`, cut to `limit`.

    For text from outside the operator's control (a bot's own report): it is shown,
    never refused, so the bot's words stay readable without the control they tried.
    """
    safe = UNSAFE_CHARACTERS.sub(lambda found: f"\\u{ord(found.group()):04x}", text[: limit * 6])
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


def json_size_errors(value: Any, *, path: str, max_bytes: int, max_depth: int) -> list[FieldError]:
    """Problems with `value`'s nesting depth or compact JSON size; empty when it fits.

    Depth is measured without recursion, so that a hostile 100,000-deep object costs
    a loop, not a RecursionError; the size is only computed once the depth is known
    to be small (json.dumps recurses).
    """
    depth = _depth(value, limit=max_depth)
    if depth > max_depth:
        return [FieldError(path, f"is nested more than {max_depth} levels deep")]
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > max_bytes:
        return [FieldError(path, f"is {size} bytes as JSON; at most {max_bytes} bytes are allowed")]
    return []


def _depth(value: Any, *, limit: int) -> int:
    """Nesting depth of objects and lists (a scalar is 0); stops counting past `limit`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest
