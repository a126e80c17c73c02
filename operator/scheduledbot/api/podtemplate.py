"""The shape of a bot Pod template, as far as the CRD checks it.

Why only a shape
================
Embedding the full PodTemplateSpec schema would add thousands of lines to each
CRD and tie it to one Kubernetes version; the API server validates the Pod the
operator creates anyway. But a template that is not even shaped like one
(`spec: "x"`, `containers: "x"`, a container without a name) can only fail, so
these few fields are typed: the API server refuses such a template at apply,
and `parse_spec` refuses it in the operator, which then fails the bot at once
instead of retrying a Pod that cannot be built. Every other field is kept as
written (unknown fields are preserved) and left to the API server's Pod
validation, the Pod Security check and the webhook's access review.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

MAX_CONTAINERS: Final = 16


class _Open(BaseModel):
    # extra="allow": the Pod API's other fields pass through untouched.
    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel, extra="allow", strict=True)


class ContainerShape(_Open):
    """A container of the bot Pod. Its other fields are the Pod API's, validated by the API server."""

    name: str = Field(
        min_length=1,
        max_length=63,
        description="The container's name (a DNS label). The first container runs the bot and gets the bot "
        "protocol's environment, control port and token.",
    )
    image: str | None = Field(
        default=None,
        max_length=4096,
        description="The container image. Required by the API server in the Pod the operator creates.",
    )


class PodSpecShape(_Open):
    """The bot Pod's spec. Its other fields are the Pod API's, validated by the API server."""

    containers: list[ContainerShape] = Field(
        min_length=1,
        max_length=MAX_CONTAINERS,
        description="The Pod's containers; the first one is the bot.",
    )
    init_containers: list[ContainerShape] | None = Field(
        default=None,
        max_length=MAX_CONTAINERS,
        description="Containers run to completion before the bot starts.",
    )


class PodTemplateShape(_Open):
    """A PodTemplateSpec: the Pod's labels and annotations, and its spec."""

    metadata: dict[str, Any] | None = Field(
        default=None,
        description="Labels and annotations for the bot Pod; the operator adds its own and sets the name.",
    )
    spec: PodSpecShape = Field(description="The bot Pod's spec, as in a Pod.")


def as_dict(template: PodTemplateShape) -> dict[str, Any]:
    """The template as it was written (declared fields under their wire names, the rest as is)."""
    return template.model_dump(by_alias=True, exclude_unset=True)
