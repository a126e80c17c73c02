"""The admission.k8s.io/v1 AdmissionReview: what the API server sends the webhook and what it answers.

Why parsed strictly
===================
The webhook's caller may not be the API server (forged reviews), and a review
the webhook cannot read must never be allowed: `parse_review` turns the body
into typed values or a `ReviewError` whose message names the field, never
Python's words. The request's `uid` is read on its own first (`review_uid`), so
that even a review that fails later checks can be answered with a denial that
the API server accepts (it matches answers to requests by uid).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

API_VERSION: Final = "admission.k8s.io/v1"
KIND: Final = "AdmissionReview"
#: A review's uid comes first in the API server's encoding of the request: this finds it in
#: the head of a body too large to read whole.
_HEAD_UID: Final = re.compile(rb'"request"\s*:\s*\{\s*"uid"\s*:\s*"([0-9A-Za-z-]{1,128})"')
_UID_PATTERN: Final = r"^[0-9A-Za-z-]{1,128}$"


class ReviewError(ValueError):
    """A body that is not an AdmissionReview this webhook can answer; the message names the field."""


class Operation(enum.StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    CONNECT = "CONNECT"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel, extra="ignore")


class GroupVersionKind(_Model):
    group: str = Field(max_length=253)
    version: str = Field(max_length=63)
    kind: str = Field(max_length=63)


class UserInfo(_Model):
    """Who made the request, as the API server authenticated them."""

    username: str = Field(default="", max_length=1024)
    uid: str = Field(default="", max_length=1024)
    groups: tuple[str, ...] = Field(default=(), max_length=1024)
    extra: Mapping[str, tuple[str, ...]] = Field(default_factory=dict)


class AdmissionRequest(_Model):
    uid: str = Field(pattern=_UID_PATTERN)
    kind: GroupVersionKind
    sub_resource: str | None = Field(default=None, max_length=253)
    name: str = Field(default="", max_length=253)
    namespace: str = Field(default="", max_length=63)
    operation: Operation
    user_info: UserInfo
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = None
    dry_run: bool = False


class AdmissionReview(_Model):
    api_version: Literal["admission.k8s.io/v1"]
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


def review_uid(head: bytes) -> str | None:
    """The request uid found in the first bytes of a review, if it is where the API server puts it."""
    found = _HEAD_UID.search(head)
    return found.group(1).decode() if found else None


def parse_review(body: bytes) -> AdmissionReview:
    """`body` as an AdmissionReview; `ReviewError` names what is wrong, in words of the API."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise ReviewError("the body is nested too deeply to be an AdmissionReview") from None
    except ValueError:
        raise ReviewError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise ReviewError("the body is not a JSON object")
    try:
        return AdmissionReview.model_validate(data)
    except ValidationError as invalid:
        first = invalid.errors()[0]
        path = ".".join(str(part) for part in first["loc"]) or "(the review)"
        problem = "is required" if first["type"] == "missing" else "is not what an AdmissionReview holds there"
        raise ReviewError(f"{path} {problem}") from None
    except RecursionError:
        raise ReviewError("the body is nested too deeply to be an AdmissionReview") from None


def answer(uid: str, *, allowed: bool, message: str = "", code: int = 200) -> dict[str, Any]:
    """The AdmissionReview the webhook answers with."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {"code": code, "message": message}
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}
