"""The ScheduledBot API: spec and status models, states, conditions, and spec parsing.

Two views of a spec
===================
`ScheduledBotSpec` is the wire shape: what a user writes, camelCase, strings as
they were typed. The CRD schema (and so `kubectl explain`) is generated from it
and from `ScheduledBotStatus`, so every field description here is user-facing
text. `ValidSpec` is what the rest of the operator works with: `joinAt` already
an aware UTC datetime, the platform detected. `parse_spec` is the one door from
the first to the second and reports every problem at once, each naming its
field (`spec.joinAt: ...`).

Rules that hold without the operator
====================================
The CEL rules on `joinAt` and `meetingUrl` sit beside their fields (as
kubebuilder markers do) and are built from the same pattern and lists the
Python parsers use. Rules about the whole object (what may change once the bot
is joining) are in `scheduledbot.api.crd`, which assembles the object.

Frozen, with one caveat
=======================
All models are frozen, but `botConfig` and `template` are plain dicts handed
through to the bot Pod: treat them as read-only.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonValue
from pydantic_core import PydanticCustomError

from scheduledbot.api.errors import FieldError, SpecError, quote_value
from scheduledbot.api.joinat import (
    EXPECTED_FORM,
    JOIN_AT_PATTERN,
    LOCAL_DATE_TIME_PATTERN,
    JoinAtError,
    parse_join_at,
)
from scheduledbot.api.limits import (
    MAX_BOT_CONFIG_BYTES,
    MAX_BOT_CONFIG_DEPTH,
    MAX_BOT_CONFIG_KEYS,
    MAX_TEMPLATE_BYTES,
    MAX_TEMPLATE_DEPTH,
    SAFE_TEXT_MESSAGE,
    json_size_errors,
    safe_text_rule,
    unsafe_character,
)
from scheduledbot.api.notify import NotificationsStatus, NotifySpec
from scheduledbot.api.platforms import SUPPORTED_PLATFORMS, MeetingUrlError, Platform, detect_platform
from scheduledbot.api.podtemplate import PodTemplateShape, as_dict

# Re-exported: the lifecycle vocabulary is defined in api.states, and imported from here as well.
from scheduledbot.api.states import IN_MEETING_STATES as IN_MEETING_STATES
from scheduledbot.api.states import RESCHEDULABLE_STATES as RESCHEDULABLE_STATES
from scheduledbot.api.states import TERMINAL_STATES as TERMINAL_STATES
from scheduledbot.api.states import BotState as BotState
from scheduledbot.api.states import JoinedBy as JoinedBy

#: Without a name the bot would join as anonymous; a name makes it recognisable in the meeting.
DEFAULT_BOT_NAME: Final = "Meeting Bot"

#: Long enough for any real join link (Teams links with context run to ~600 characters).
MAX_MEETING_URL_LENGTH: Final = 2048
MAX_JOIN_AT_LENGTH: Final = 64
MAX_TIMESTAMP_LENGTH: Final = 64
MAX_REASON_LENGTH: Final = 1024
MAX_MESSAGE_LENGTH: Final = 32768
MAX_CONDITIONS: Final = 16

#: metav1.Condition's own patterns, so that kstatus and friends read ours as theirs.
_CONDITION_TYPE_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
_REASON_PATTERN: Final = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


def _cel_string(text: str) -> str:
    """`text` as a CEL single-quoted literal; refuses what would need escaping."""
    if "\\" in text or "'" in text or "\n" in text:
        raise ValueError(f"not safe in a CEL string literal: {text!r}")
    return f"'{text}'"


def _join_at_rules() -> list[JsonValue]:
    # Two rules, so that the calendar check only speaks about strings the first
    # accepted; `!matches || ...` also keeps substring() away from short strings.
    pattern, hint = _cel_string(JOIN_AT_PATTERN), _cel_string(EXPECTED_FORM)
    year, month, day = "int(self.substring(0, 4))", "int(self.substring(5, 7))", "int(self.substring(8, 10))"
    leap = f"({year} % 4 == 0 && ({year} % 100 != 0 || {year} % 400 == 0))"
    last_day = f"({month} == 2 ? ({leap} ? 29 : 28) : ({month} in [4, 6, 9, 11] ? 30 : 31))"
    return [
        {
            "rule": f"self.matches({pattern})",
            "message": f"is not an ISO 8601 date-time with a UTC offset; {EXPECTED_FORM}",
            "messageExpression": (
                f"'\"' + self + '\"' + (self.matches({_cel_string(LOCAL_DATE_TIME_PATTERN)})"
                " ? ' has no UTC offset; ' : ' is not an ISO 8601 date-time; ') + " + hint
            ),
        },
        {
            "rule": f"!self.matches({pattern}) || ({year} >= 1 && {day} <= {last_day})",
            "message": f"is not a real calendar date; {EXPECTED_FORM}",
            "messageExpression": f"'\"' + self + '\" is not a real calendar date; ' + {hint}",
        },
    ]


def _meeting_url_rules() -> list[JsonValue]:
    return [
        {
            "rule": "isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != ''",
            "message": f"must be an https URL of a supported meeting platform: {SUPPORTED_PLATFORMS}",
        },
        safe_text_rule(),
    ]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)


class ScheduledBotSpec(_Model):
    """What the user asks for: which meeting (meetingUrl), who (botName) and when (joinAt)."""

    # Unknown keys are ignored, not refused: the apiserver already prunes them,
    # and an older operator must not fail every bot when a newer CRD adds a field.
    model_config = ConfigDict(strict=True, extra="ignore")

    meeting_url: str = Field(
        min_length=1,
        max_length=MAX_MEETING_URL_LENGTH,
        description=(
            f"The meeting to join, as an https link. Supported: {SUPPORTED_PLATFORMS}. The apiserver checks that "
            "it is an http(s) URL; the platform check needs the operator's settings (an administrator may admit "
            "a local meeting server for demos), so the operator's admission webhook makes it and rejects "
            "other URLs. The detected platform is shown in status.platform. Cannot change once the bot has "
            "started joining."
        ),
        json_schema_extra={"x-kubernetes-validations": _meeting_url_rules()},
    )
    bot_name: str = Field(
        default=DEFAULT_BOT_NAME,
        min_length=1,
        max_length=100,
        description=(
            "The name the bot shows in the meeting. Control characters, line separators and bidirectional "
            "overrides are refused."
        ),
        json_schema_extra={"x-kubernetes-validations": [safe_text_rule()]},
    )
    join_at: str = Field(
        max_length=MAX_JOIN_AT_LENGTH,
        description=(
            "When the bot joins: ISO 8601 with an explicit UTC offset, e.g. 2025-06-16T16:24:00Z, "
            "2025-06-16T16:24:00+00:00 or 2025-06-16T16:24:00+0000; fractional seconds are kept to the "
            "microsecond. Must be in the future when created (checked by the operator's admission webhook). "
            "May be edited to reschedule while the bot is scheduled or staged; status.joinAt shows it "
            "normalized to RFC 3339 UTC."
        ),
        json_schema_extra={"x-kubernetes-validations": _join_at_rules()},
    )
    staging_lead_seconds: int | None = Field(
        default=None,
        ge=0,
        le=86400,
        description=(
            "How long before joinAt the bot Pod is created and warmed up (image pulled, process started), so "
            "that joining itself is instant: status.stageAt = joinAt - stagingLeadSeconds, the latest creation time "
            "(the operator may stage earlier, pacing many bots that share a joinAt). Defaults to the "
            "operator's setting. Leads under 120 seconds are accepted but flagged: the Pod may not be ready "
            "by joinAt."
        ),
    )
    join_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=3600,
        description=(
            "How late after joinAt a join may still start; past it the bot fails with a reason instead of "
            "joining late. Defaults to the operator's setting."
        ),
    )
    max_duration_seconds: int | None = Field(
        default=None,
        ge=60,
        le=86400,
        description=(
            "How long the bot may stay, counted from when it joined; then it is asked to leave. Defaults to "
            "the operator's setting."
        ),
    )
    bot_class_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description=(
            "The BotClass (cluster-scoped, owned by the platform team) whose Pod template, allowed platforms and "
            "limits apply to this bot. When absent, the class annotated meetingbots.dev/is-default-class: "
            '"true" applies, if there is one.'
        ),
    )
    # preserve-unknown-fields: free-form by design; its meaning belongs to the bot image.
    # CEL cannot see inside it, so its size and depth are checked by parse_spec.
    bot_config: dict[str, Any] | None = Field(
        default=None,
        max_length=MAX_BOT_CONFIG_KEYS,
        description=(
            "Free-form settings handed to the bot as JSON in its BOT_CONFIG environment variable (recording "
            f"settings and the like); the operator does not interpret them. At most {MAX_BOT_CONFIG_KEYS} keys, "
            f"{MAX_BOT_CONFIG_DEPTH} levels and {MAX_BOT_CONFIG_BYTES} bytes as JSON (the bot's class may allow "
            "less)."
        ),
    )
    # Only the shape is typed (scheduledbot.api.podtemplate says why); the rest is
    # kept as written and validated by the API server in the Pod the operator creates.
    template: PodTemplateShape | None = Field(
        default=None,
        description=(
            "A PodTemplateSpec for the bot Pod (image, resources, nodeSelector, tolerations...), as Jobs have. "
            "Allowed only if the bot's class allows inline templates, and only for authors who could create "
            "that Pod themselves (checked at admission); it must meet the Pod Security baseline. The operator "
            "adds the bot protocol's environment, control port, readiness probe and token. Defaults to the "
            f"class's template. At most {MAX_TEMPLATE_BYTES} bytes as JSON."
        ),
    )
    notify: NotifySpec | None = Field(
        default=None,
        description=(
            "Where to send a signed notification (CloudEvents JSON, Standard Webhooks signature) of each state "
            "change. Absent: the operator's default sink, if it has one."
        ),
    )

    @field_validator("meeting_url", "bot_name")
    @classmethod
    def _safe_text(cls, text: str) -> str:
        found = unsafe_character(text)
        if found:
            raise PydanticCustomError("unsafe_text", f"{SAFE_TEXT_MESSAGE} (found {found})")
        return text


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidSpec:
    """A spec that passed every check that needs no clock, in the types the operator works with."""

    meeting_url: str
    platform: Platform
    bot_name: str
    #: Aware, UTC.
    join_at: datetime
    #: None means "the operator's default": defaults are settings, not part of the spec.
    staging_lead_seconds: int | None
    join_deadline_seconds: int | None
    max_duration_seconds: int | None
    #: None: the default class, if there is one.
    bot_class_name: str | None = None
    bot_config: Mapping[str, Any] | None
    template: Mapping[str, Any] | None
    notify: NotifySpec | None = None


def parse_spec(spec: object, *, extra_hosts: frozenset[str]) -> ValidSpec:
    """`spec` (a ScheduledBot's `.spec`, as the apiserver returns it) as a `ValidSpec`.

    Raises `SpecError` listing every problem, in field order, each naming its
    field. `extra_hosts` is the operator's admin-only setting (see
    `detect_platform`). Whether joinAt is in the future needs the clock and is
    not checked here.
    """
    if not isinstance(spec, Mapping):
        raise SpecError([FieldError("spec", "is required" if spec is None else "must be an object")])
    # Sizes first, without recursion: an object too deep or too large is reported as
    # such, and never handed to the model's validation.
    errors = _size_errors(spec)
    if errors:
        spec = {key: value for key, value in spec.items() if f"spec.{key}" not in {e.path for e in errors}}
    try:
        raw: ScheduledBotSpec | None = ScheduledBotSpec.model_validate(spec)
    except ValidationError as invalid:
        raw = None
        errors.extend(_field_errors(invalid))
    failed = {error.path for error in errors}
    join_at: datetime | None = None
    platform: Platform | None = None
    # From the model when it validated (it also accepts snake_case keys), else
    # straight from the input, so that every field's problems are reported at once.
    join_at_text = raw.join_at if raw is not None else spec.get("joinAt")
    url = raw.meeting_url if raw is not None else spec.get("meetingUrl")
    if "spec.joinAt" not in failed and isinstance(join_at_text, str):
        try:
            join_at = parse_join_at(join_at_text)
        except JoinAtError as problem:
            errors.append(problem.error)
    if "spec.meetingUrl" not in failed and isinstance(url, str):
        try:
            platform = detect_platform(url, extra_hosts=extra_hosts)
        except MeetingUrlError as problem:
            errors.append(problem.error)
    if errors or raw is None or join_at is None or platform is None:
        raise SpecError(sorted(errors, key=_field_order))
    return ValidSpec(
        meeting_url=raw.meeting_url,
        platform=platform,
        bot_name=raw.bot_name,
        join_at=join_at,
        staging_lead_seconds=raw.staging_lead_seconds,
        join_deadline_seconds=raw.join_deadline_seconds,
        max_duration_seconds=raw.max_duration_seconds,
        bot_class_name=raw.bot_class_name,
        bot_config=raw.bot_config,
        template=as_dict(raw.template) if raw.template is not None else None,
        notify=raw.notify,
    )


def _size_errors(spec: Mapping[str, Any]) -> list[FieldError]:
    errors = []
    for key, max_bytes, max_depth in (
        ("botConfig", MAX_BOT_CONFIG_BYTES, MAX_BOT_CONFIG_DEPTH),
        ("template", MAX_TEMPLATE_BYTES, MAX_TEMPLATE_DEPTH),
    ):
        if spec.get(key) is not None:
            errors += json_size_errors(spec[key], path=f"spec.{key}", max_bytes=max_bytes, max_depth=max_depth)
    return errors


_SPEC_FIELD_ORDER: Final = {
    f"spec.{field.alias}": index for index, field in enumerate(ScheduledBotSpec.model_fields.values())
}


def _field_order(error: FieldError) -> int:
    top = ".".join(error.path.split(".")[:2]).split("[")[0]
    return _SPEC_FIELD_ORDER.get(top, len(_SPEC_FIELD_ORDER))


def _field_errors(invalid: ValidationError) -> list[FieldError]:
    out = []
    for error in invalid.errors():
        path = "spec" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
        if error["type"] == "missing":
            out.append(FieldError(path, "is required"))
            continue
        shown = _shown(error["input"])
        message = error["msg"]
        out.append(FieldError(path, f"{shown} is invalid: {message[:1].lower()}{message[1:]}"))
    return out


def _shown(value: object) -> str:
    """A wrong value as a message quotes it: bounded, whatever its size."""
    if isinstance(value, str):
        return quote_value(value)
    if isinstance(value, Mapping):
        return f"an object of {len(value)} keys"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return quote_value(repr(value))[1:-1]


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


def _timestamp(description: str) -> Any:
    return Field(
        default=None,
        max_length=MAX_TIMESTAMP_LENGTH,
        description=description,
        json_schema_extra={"format": "date-time"},
    )


class Condition(_Model):
    """One aspect of the bot's status, in the shape of metav1.Condition."""

    type: str = Field(
        max_length=316,
        pattern=_CONDITION_TYPE_PATTERN,
        description="Ready, Reconciling or Stalled, as kstatus reads them; ReadyBeforeJoin; NotificationsFailing.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation the condition was computed from.",
    )
    last_transition_time: str = Field(
        max_length=MAX_TIMESTAMP_LENGTH,
        description="When status last changed (RFC 3339 UTC); kept when only reason or message change.",
        json_schema_extra={"format": "date-time"},
    )
    reason: str = Field(
        min_length=1,
        max_length=MAX_REASON_LENGTH,
        pattern=_REASON_PATTERN,
        description="Why, in CamelCase, for machines.",
    )
    message: str = Field(max_length=MAX_MESSAGE_LENGTH, description="Why, for people.")


class ScheduledBotStatus(_Model):
    """What the operator observed and did. Written only by the operator, through the status subresource."""

    state: BotState | None = Field(
        default=None,
        description=(
            "The lifecycle state. scheduled: accepted, waiting for stageAt; staged: the bot Pod was created "
            "(by stageAt) and waits for joinAt; joining: at joinAt the operator signalled the Pod (or the Pod "
            "started on its own); waiting_room, joined, recording, leaving, ended and failed mirror what the "
            "bot reports, and the operator sets failed itself when the bot cannot be run or join in time. "
            "ended and failed are final."
        ),
    )
    reason: str | None = Field(
        default=None,
        max_length=MAX_REASON_LENGTH,
        pattern=_REASON_PATTERN,
        description="Why the bot is in its state, in CamelCase (e.g. JoinAtInPast). Written with every state change.",
    )
    message: str | None = Field(
        default=None,
        max_length=MAX_MESSAGE_LENGTH,
        description="Why the bot is in its state, for people. Written with every state change.",
    )
    platform: Platform | None = Field(
        default=None,
        description="The platform detected from spec.meetingUrl. Written by the operator when it accepts a spec.",
    )
    join_at: str | None = _timestamp(
        "spec.joinAt normalized to RFC 3339 UTC (e.g. 2025-06-16T16:55:00Z). Written by the operator when it "
        "accepts a spec: at creation and at every reschedule."
    )
    stage_at: str | None = _timestamp(
        "When the bot Pod is created at the latest: stageAt = joinAt - stagingLeadSeconds (spec.stagingLeadSeconds, "
        "else the operator's default); paced staging may create it earlier. If that is already past when the bot "
        "is accepted, the Pod is created at once. "
        "Written with joinAt."
    )
    pod_name: str | None = Field(
        default=None,
        max_length=253,
        description=(
            "The bot Pod, <metadata.name>-bot. Written by the operator when it creates the Pod (by stageAt); "
            "cleared when a reschedule or cancel releases it."
        ),
    )
    scheduled_at: str | None = _timestamp("When the operator accepted the bot (state scheduled). Written once.")
    staged_at: str | None = _timestamp("When the operator created the bot Pod (state staged).")
    join_signaled_at: str | None = _timestamp(
        "When the operator sent the join signal to the bot Pod. Absent when the Pod joined on its own "
        "(joinedBy: deadline)."
    )
    joined_at: str | None = _timestamp("When the bot reported that it was in the meeting (state joined).")
    ended_at: str | None = _timestamp("When the bot reached ended or failed.")
    join_lateness_ms: int | None = Field(
        default=None,
        description=(
            "How late the join started, in milliseconds: the time the bot reports it started joining "
            "(joinStartedAt) - joinAt, else joinSignaledAt - joinAt. Written once, when the join starts; "
            "also exported as a histogram."
        ),
    )
    joined_by: JoinedBy | None = Field(
        default=None,
        description=(
            "What started the join: signal (the operator's join call at joinAt) or deadline (the bot Pod's own "
            "timer, when no signal had come shortly after joinAt). As the bot reports it."
        ),
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the spec the operator last acted on. Written with every status write.",
    )
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=MAX_CONDITIONS,
        description=(
            "Ready, Reconciling and Stalled, as kstatus (Flux, Argo CD, kubectl wait) reads them: a scheduled "
            "or staged bot is Ready; a failed one is Stalled. Also ReadyBeforeJoin (False, reason LateStaging, "
            "when the bot Pod is not expected Ready by joinAt) and NotificationsFailing (deliveries of spec.notify "
            "failing). "
            "Written with every status write."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    notifications: NotificationsStatus | None = Field(
        default=None,
        description=(
            "The delivery of state-change notifications: what is still to be sent, in order, and how the last "
            "attempts went. Written by the operator with the state change itself and after each delivery attempt."
        ),
    )
