"""Validation errors that name the field they are about.

Why every error carries its path
================================
The same message reaches users through three doors: the admission webhook's
denial (`kubectl apply` prints it), the operator's `status.message` when the
webhook was bypassed, and the unit tests. Naming the field (`spec.joinAt: ...`)
in the message itself makes each of them actionable without context, as
mysql-operator's typed spec errors are. The path is also kept apart, so the
webhook can fill `status.details.causes[].field`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

#: Quoted user input is cut here, so that a pasted paragraph cannot flood a message.
_MAX_QUOTED: Final = 80


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field: `path` is like `spec.joinAt`, `detail` says what is wrong."""

    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"


class FieldValueError(ValueError):
    """A single field's value is invalid; `str()` is the full message, path first."""

    def __init__(self, error: FieldError) -> None:
        super().__init__(str(error))
        self.error: Final = error


class SpecError(ValueError):
    """A ScheduledBot spec is invalid; `errors` lists every problem found, in field order."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors: Final = tuple(errors)
        if not self.errors:
            raise ValueError("SpecError needs at least one FieldError")
        super().__init__("; ".join(self.messages))

    @property
    def messages(self) -> tuple[str, ...]:
        """One `path: detail` line per problem, as the admission webhook returns them."""
        return tuple(str(error) for error in self.errors)


def quote_value(text: str) -> str:
    """`text` in double quotes, escaped as JSON and cut at a readable length."""
    if len(text) > _MAX_QUOTED:
        text = text[: _MAX_QUOTED - 1] + "…"
    return json.dumps(text, ensure_ascii=False)
