"""The BotClass API: what the platform team decides for every bot of a class.

Why a class
===========
A ScheduledBot's author is often an application team that may create
ScheduledBots in its namespace and nothing more. If the bot's Pod came only from
the ScheduledBot, "may create ScheduledBots" would mean "may create any Pod",
with any ServiceAccount, host access or Secret of the namespace. As IngressClass,
GatewayClass and StorageClass do, the cluster-scoped BotClass splits the
personas: the platform team owns the Pod template (image, resources,
ServiceAccount, security context, placement, volumes), the platforms bots may
join and the limits; the application team names a class. An inline template in a
ScheduledBot is allowed only where its class says so, and only for an author who
could create that Pod directly (scheduledbot.core.admission).

One class may be marked the default with the annotation
`meetingbots.dev/is-default-class: "true"`; it applies to ScheduledBots that name
none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError
from pydantic.alias_generators import to_camel

from scheduledbot.api.errors import FieldError, SpecError
from scheduledbot.api.limits import MAX_BOT_CONFIG_BYTES, MAX_TEMPLATE_BYTES, MAX_TEMPLATE_DEPTH, json_size_errors
from scheduledbot.api.platforms import Platform
from scheduledbot.api.podtemplate import PodTemplateShape, as_dict

DEFAULT_CLASS_ANNOTATION: Final = "meetingbots.dev/is-default-class"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel, strict=True, extra="ignore")


class BotClassLimits(_Model):
    """Upper bounds on what a ScheduledBot of this class may ask for."""

    max_bot_config_bytes: int | None = Field(
        default=None,
        ge=2,
        le=MAX_BOT_CONFIG_BYTES,
        description=(
            f"The largest spec.botConfig, in bytes of compact JSON. Defaults to {MAX_BOT_CONFIG_BYTES}, which is "
            "also the most any class may allow."
        ),
    )
    max_duration_seconds: int | None = Field(
        default=None,
        ge=60,
        le=86400,
        description=(
            "The longest a bot may stay in a meeting: spec.maxDurationSeconds may not be larger, and the "
            "operator's default is cut to it."
        ),
    )
    max_staging_lead_seconds: int | None = Field(
        default=None,
        ge=0,
        le=86400,
        description=(
            "The longest a bot Pod may wait before joinAt (spec.stagingLeadSeconds and the operator's default "
            "alike): how long a class's Pods may hold their resources idle."
        ),
    )


class BotClassSpec(_Model):
    """What bots of this class run and what they may do."""

    template: PodTemplateShape | None = Field(
        default=None,
        description=(
            "The PodTemplateSpec of the bot Pods of this class (image, resources, serviceAccountName, security "
            "context, nodeSelector, tolerations, volumes...). The operator adds the bot protocol's environment, "
            "control port, readiness probe and token. It must meet the Pod Security baseline. Defaults to the "
            f"operator's template. At most {MAX_TEMPLATE_BYTES} bytes as JSON."
        ),
    )
    # Lax items: the strings of the wire become the enum (strict mode wants enum instances).
    allowed_platforms: list[Annotated[Platform, Strict(False)]] | None = Field(
        default=None,
        min_length=1,
        max_length=len(Platform),
        description="The meeting platforms bots of this class may join. Defaults to every supported platform.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    allow_inline_template: bool = Field(
        default=False,
        description=(
            "Whether a ScheduledBot of this class may carry its own spec.template, which then replaces the "
            "class's. Such a template is admitted only if its author could create that Pod (and read the "
            "Secrets and ConfigMaps it references) in the bot's namespace, and only if it meets the Pod "
            "Security baseline."
        ),
    )
    limits: BotClassLimits | None = Field(
        default=None, description="Upper bounds on what a ScheduledBot of this class may ask for."
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidBotClass:
    """A BotClass that passed its checks, in the types the operator works with."""

    name: str
    is_default: bool
    #: None: the operator's default template.
    template: Mapping[str, Any] | None
    #: None: every platform.
    allowed_platforms: frozenset[Platform] | None
    allow_inline_template: bool
    max_bot_config_bytes: int
    max_duration_seconds: int | None
    max_staging_lead_seconds: int | None


def parse_bot_class(body: Mapping[str, Any]) -> ValidBotClass:
    """A BotClass object (as the API server returns it) as a `ValidBotClass`; `SpecError` names every problem."""
    meta = body.get("metadata")
    spec = body.get("spec")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        raise SpecError([FieldError("metadata.name", "is required")])
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise SpecError([FieldError("spec", "must be an object")])
    errors: list[FieldError] = []
    if spec.get("template") is not None:
        errors += json_size_errors(
            spec["template"], path="spec.template", max_bytes=MAX_TEMPLATE_BYTES, max_depth=MAX_TEMPLATE_DEPTH
        )
    parsed: BotClassSpec | None = None
    if not errors:
        try:
            parsed = BotClassSpec.model_validate(spec)
        except ValidationError as invalid:
            errors += [
                FieldError("spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]), e["msg"])
                for e in invalid.errors()
            ]
    if errors or parsed is None:
        raise SpecError(errors)
    annotations = meta.get("annotations") or {}
    limits = parsed.limits or BotClassLimits()
    return ValidBotClass(
        name=meta["name"],
        is_default=isinstance(annotations, Mapping) and annotations.get(DEFAULT_CLASS_ANNOTATION) == "true",
        template=as_dict(parsed.template) if parsed.template is not None else None,
        allowed_platforms=frozenset(parsed.allowed_platforms) if parsed.allowed_platforms else None,
        allow_inline_template=parsed.allow_inline_template,
        max_bot_config_bytes=limits.max_bot_config_bytes or MAX_BOT_CONFIG_BYTES,
        max_duration_seconds=limits.max_duration_seconds,
        max_staging_lead_seconds=limits.max_staging_lead_seconds,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokenClass:
    """A BotClass that exists but fails its checks: bots naming it are refused, with its problems."""

    name: str
    is_default: bool
    problems: tuple[str, ...]


def load_bot_class(body: Mapping[str, Any]) -> ValidBotClass | BrokenClass:
    """`parse_bot_class`, with a class that fails its checks kept as a `BrokenClass` instead of raised."""
    try:
        return parse_bot_class(body)
    except SpecError as error:
        meta = _object(body.get("metadata"))
        annotations = _object(meta.get("annotations"))
        return BrokenClass(
            name=str(meta.get("name") or ""),
            is_default=annotations.get(DEFAULT_CLASS_ANNOTATION) == "true",
            problems=error.messages,
        )


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
