"""The BotSchedule API: bots for recurring meetings and calendar feeds, as CronJob makes Jobs.

What a BotSchedule is
=====================
One object stands for a series of meetings: "every Monday 09:00 Berlin" (a
five-field `cron` or an RFC 5545 `rrule`) or "every meeting in this calendar"
(an iCalendar feed, `ical`). The operator creates one ordinary ScheduledBot per
upcoming occurrence, `horizon` ahead of time, from `botTemplate`; the
ScheduledBot stays the unit that joins.

Two views of a spec
===================
As for ScheduledBot (`scheduledbot.api.models`): `BotScheduleSpec` is the wire
shape, from which the CRD (and `kubectl explain`) is generated; `ValidSchedule`
is what the operator works with (the zone loaded, the rule parsed, the template
checked as a ScheduledBot spec). `parse_schedule_spec` is the one door between
them and reports every problem at once, each naming its field.

The template is a ScheduledBot spec
===================================
`BotTemplateSpec` is derived from `ScheduledBotSpec` field by field (without
`joinAt`, with `meetingUrl` optional), so a field added to ScheduledBot is a
template field too, with its own limits and CEL rules; and the template is
checked by `parse_spec` itself, on the spec a child would get.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from dateutil.rrule import DAILY, HOURLY, MINUTELY, MONTHLY, SECONDLY, WEEKLY, YEARLY, rrule, rrulestr
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.config import JsonValue
from pydantic.fields import FieldInfo

from scheduledbot.api.errors import FieldError, SpecError, quote_value
from scheduledbot.api.models import (
    _CONDITION_TYPE_PATTERN,
    MAX_CONDITIONS,
    MAX_TIMESTAMP_LENGTH,
    Condition,
    ScheduledBotSpec,
    _cel_string,
    _field_errors,
    _Model,
    parse_spec,
)

#: Children are named `<schedule>-<10 characters>` and a ScheduledBot's name is at most 63.
MAX_NAME_LENGTH: Final = 52
DEFAULT_HORIZON_SECONDS: Final = 24 * 3600
#: Calendar products materialize 28 days ahead; so do we, at most.
MAX_HORIZON_SECONDS: Final = 28 * 24 * 3600
DEFAULT_STARTING_DEADLINE_SECONDS: Final = 300
MAX_STARTING_DEADLINE_SECONDS: Final = 24 * 3600
DEFAULT_POLL_INTERVAL_SECONDS: Final = 300
MIN_POLL_INTERVAL_SECONDS: Final = 60
MAX_POLL_INTERVAL_SECONDS: Final = 24 * 3600
MAX_HISTORY_LIMIT: Final = 100
MAX_NEXT: Final = 10
MAX_ACTIVE: Final = 100
MAX_SETTLED: Final = 256
MAX_SKIPPED: Final = 20
MAX_CRON_LENGTH: Final = 256
MAX_RULE_LENGTH: Final = 1024
MAX_DATES: Final = 200
#: Room for a mistyped offset, so that the message can say what is wrong with it.
MAX_LOCAL_TIME_LENGTH: Final = 32
#: The longest zone name in tzdata has 32 characters.
MAX_TIME_ZONE_LENGTH: Final = 64
MAX_REGEX_LENGTH: Final = 256
MAX_ORGANIZER_LENGTH: Final = 320
MAX_NAME_REF_LENGTH: Final = 253
MAX_LABELS: Final = 64
MAX_LABEL_VALUE_LENGTH: Final = 63
MAX_ANNOTATION_VALUE_LENGTH: Final = 4096
MAX_KEY_LENGTH: Final = 317
MAX_MESSAGE_LENGTH: Final = 1024
MAX_SOURCE_LENGTH: Final = 300

#: An IANA zone name's shape (`Europe/Berlin`, `America/Argentina/Buenos_Aires`, `UTC`, `Etc/GMT+2`);
#: whether the zone exists needs the zone database, which the webhook has and CEL has not.
TIME_ZONE_PATTERN: Final = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
TIME_ZONE_FORM: Final = "expected an IANA time zone name such as Europe/Berlin or America/New_York"
#: A local wall-clock time, to the second, without an offset: the zone is spec.timeZone. A space for the T is
#: accepted: kustomize drops the quotes of `"2026-03-02T09:00:00"`, and YAML 1.1 tools (PyYAML) then read a
#: timestamp and write it back as `2026-03-02 09:00:00`.
LOCAL_TIME_PATTERN: Final = (
    "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$"
)
LOCAL_TIME_FORM: Final = "expected a local date-time without an offset, e.g. 2026-03-02T09:00:00"
#: Five fields separated by spaces; CronJob's `CRON_TZ=` prefix and `@daily` macros do not match.
CRON_PATTERN: Final = "^ *[^ @]+( +[^ ]+){4} *$"
CRON_FORM: Final = 'expected five fields (minute hour day-of-month month day-of-week), e.g. "0 9 * * 1-5"'
#: One RRULE value on one line: no DTSTART, EXDATE or second line (they have fields of their own).
RULE_PATTERN: Final = "^(RRULE:)?[A-Za-z0-9=;,+-]+$"
RULE_FORM: Final = "expected an RFC 5545 RRULE value, e.g. FREQ=WEEKLY;BYDAY=MO"
_SECRET_NAME_PATTERN: Final = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_SECRET_KEY_PATTERN: Final = "^[-._a-zA-Z0-9]+$"

_LOCAL_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S"


class ConcurrencyPolicy(enum.StrEnum):
    """What happens when an occurrence starts while this schedule's bot of an earlier one is still in that meeting."""

    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class SourceKind(enum.StrEnum):
    CRON = "cron"
    RRULE = "rrule"
    ICAL = "ical"


def _rules(*rules: tuple[str, str]) -> dict[str, Any]:
    validations: list[JsonValue] = [{"rule": rule, "message": message} for rule, message in rules]
    return {"x-kubernetes-validations": validations}


def _matches(pattern: str) -> str:
    return f"self.matches({_cel_string(pattern)})"


class RRuleSource(_Model):
    """A recurrence as RFC 5545 writes it, expanded in spec.timeZone's wall-clock time."""

    dtstart: str = Field(
        max_length=MAX_LOCAL_TIME_LENGTH,
        description=(
            "The first occurrence, as a local wall-clock time in spec.timeZone without an offset, e.g. "
            "2026-03-02T09:00:00. Every occurrence keeps this time of day across daylight-saving changes; a time "
            "that does not exist on a given day (spring forward) is moved forward by the gap (02:30 becomes "
            "03:30), and a time that occurs twice (fall back) is the first of the two."
        ),
        json_schema_extra=_rules((_matches(LOCAL_TIME_PATTERN), f"must be a local date-time; {LOCAL_TIME_FORM}")),
    )
    rule: str = Field(
        min_length=1,
        max_length=MAX_RULE_LENGTH,
        description=(
            "The RRULE value, e.g. FREQ=WEEKLY;BYDAY=MO or FREQ=DAILY;COUNT=10 (an RRULE: prefix is accepted). "
            "UNTIL is inclusive and, as RFC 5545 requires with a time zone, in UTC (ending in Z). Occurrences "
            "removed by exdates still count towards COUNT. Checked by the operator's admission webhook."
        ),
        json_schema_extra=_rules((_matches(RULE_PATTERN), f"must be one RRULE value on one line; {RULE_FORM}")),
    )
    exdates: list[str] | None = Field(
        default=None,
        max_length=MAX_DATES,
        description=(
            "Occurrences to leave out, as local wall-clock times in the form of dtstart (the time an occurrence "
            "would have, e.g. 2026-04-06T09:00:00)."
        ),
        json_schema_extra={
            "items": {
                "type": "string",
                "maxLength": MAX_LOCAL_TIME_LENGTH,
                **_rules((_matches(LOCAL_TIME_PATTERN), f"must be a local date-time; {LOCAL_TIME_FORM}")),
            }
        },
    )
    rdates: list[str] | None = Field(
        default=None,
        max_length=MAX_DATES,
        description="Extra occurrences, as local wall-clock times in the form of dtstart.",
        json_schema_extra={
            "items": {
                "type": "string",
                "maxLength": MAX_LOCAL_TIME_LENGTH,
                **_rules((_matches(LOCAL_TIME_PATTERN), f"must be a local date-time; {LOCAL_TIME_FORM}")),
            }
        },
    )


class SecretKeyRef(_Model):
    """A key of a Secret in the BotSchedule's namespace."""

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_REF_LENGTH,
        pattern=_SECRET_NAME_PATTERN,
        description="The Secret's name, in the BotSchedule's namespace.",
    )
    key: str = Field(
        min_length=1,
        max_length=MAX_NAME_REF_LENGTH,
        pattern=_SECRET_KEY_PATTERN,
        description="The key whose value is used.",
    )


class ICalFilters(_Model):
    """Which events of the feed get a bot."""

    summary_regex: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_REGEX_LENGTH,
        description=(
            "Only events whose SUMMARY (title) this regular expression finds (anywhere in it; Python syntax). "
            "Default: every event."
        ),
    )
    organizer: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ORGANIZER_LENGTH,
        description="Only events organized by this address (compared without case, with or without mailto:).",
    )
    include_all_day: bool = Field(
        default=False,
        description="Whether all-day events (a date without a time) get a bot, joining at 00:00 local time.",
    )


class ICalSource(_Model):
    """An iCalendar feed (a calendar's secret address), read by the operator every pollIntervalSeconds."""

    url_secret_ref: SecretKeyRef = Field(
        description=(
            "The Secret key holding the feed's https URL: a calendar's secret address is a credential. Feeds "
            "on loopback, link-local or cluster-internal addresses are refused unless the administrator "
            "allows the host."
        ),
    )
    poll_interval_seconds: int = Field(
        default=DEFAULT_POLL_INTERVAL_SECONDS,
        ge=MIN_POLL_INTERVAL_SECONDS,
        le=MAX_POLL_INTERVAL_SECONDS,
        description="How often the feed is read (with If-None-Match / If-Modified-Since).",
    )
    filters: ICalFilters | None = Field(
        default=None,
        description="Which events get a bot; by default every event with a time of day.",
    )


class BotTemplateMetadata(_Model):
    """Labels and annotations for the children."""

    labels: dict[str, str] | None = Field(
        default=None,
        max_length=MAX_LABELS,
        description=(
            "Labels of every child ScheduledBot. The operator adds meetingbots.dev/botschedule: <name>, which "
            "these cannot replace."
        ),
        json_schema_extra={"additionalProperties": {"type": "string", "maxLength": MAX_LABEL_VALUE_LENGTH}},
    )
    annotations: dict[str, str] | None = Field(
        default=None,
        max_length=MAX_LABELS,
        description=(
            "Annotations of every child ScheduledBot. The operator adds the occurrence's time (and, for feeds, "
            "the event's UID, RECURRENCE-ID and SEQUENCE) under meetingbots.dev/."
        ),
        json_schema_extra={"additionalProperties": {"type": "string", "maxLength": MAX_ANNOTATION_VALUE_LENGTH}},
    )


_TEMPLATE_MEETING_URL: Final = (
    "The meeting every child joins, as for ScheduledBot. Required for cron and rrule schedules. For an ical "
    "schedule, optional: when set, every event's bot joins this meeting; else each event's own link is used "
    "(its conference data such as X-GOOGLE-CONFERENCE, then LOCATION, then DESCRIPTION; only supported "
    "platforms), and events without one get no bot."
)


class _TemplateSpecBase(_Model):
    """A ScheduledBot spec without joinAt (each child's joinAt is its occurrence's start)."""

    model_config = ConfigDict(strict=True, extra="ignore")


def _derive_template_spec() -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name, info in ScheduledBotSpec.model_fields.items():
        if name == "join_at":
            continue
        if name == "meeting_url":
            optional = FieldInfo.merge_field_infos(info, default=None, description=_TEMPLATE_MEETING_URL)
            fields[name] = (str | None, optional)
        else:
            fields[name] = (info.annotation, info)
    return create_model("BotTemplateSpec", __base__=_TemplateSpecBase, **fields)


if TYPE_CHECKING:
    BotTemplateSpec = _TemplateSpecBase
else:
    BotTemplateSpec = _derive_template_spec()


class BotTemplate(_Model):
    """What each child ScheduledBot looks like."""

    metadata: BotTemplateMetadata | None = Field(default=None, description="Labels and annotations for the children.")
    spec: BotTemplateSpec = Field(
        description=(
            "A ScheduledBot spec without joinAt (each child joins at its occurrence's start). Every ScheduledBot "
            "field and rule applies; the operator's admission webhook checks it as a ScheduledBot spec."
        ),
    )


#: Why a schedule's children carry no inline Pod template: the operator creates them, so the
#: ScheduledBot webhook would check the operator's rights to that Pod, not the schedule author's.
_INLINE_TEMPLATE: Final = (
    "spec.botTemplate.spec.template is not allowed: the operator creates a schedule's bots, so nobody could check "
    "that the schedule's author may create that Pod; name a BotClass (botClassName) that holds the template instead"
)

#: Rules about several spec fields at once; the rest sit beside their fields.
SPEC_RULES: Final[list[JsonValue]] = [
    {
        "rule": "(has(self.cron) ? 1 : 0) + (has(self.rrule) ? 1 : 0) + (has(self.ical) ? 1 : 0) == 1",
        "message": "exactly one of spec.cron, spec.rrule and spec.ical must be set",
    },
    {
        "rule": "has(self.ical) || has(self.botTemplate.spec.meetingUrl)",
        "message": (
            "spec.botTemplate.spec.meetingUrl is required for cron and rrule schedules (only calendar feeds give "
            "each event its own link)"
        ),
        "fieldPath": ".botTemplate.spec.meetingUrl",
        "reason": "FieldValueRequired",
    },
    {
        "rule": "!has(self.botTemplate.spec.template)",
        "message": _INLINE_TEMPLATE,
        "fieldPath": ".botTemplate.spec.template",
        "reason": "FieldValueForbidden",
    },
]


class BotScheduleSpec(_Model):
    """When (timeZone and one source: cron, rrule or ical), what (botTemplate) and how far ahead (horizonSeconds)."""

    model_config = ConfigDict(strict=True, extra="ignore", json_schema_extra={"x-kubernetes-validations": SPEC_RULES})

    time_zone: str = Field(
        min_length=1,
        max_length=MAX_TIME_ZONE_LENGTH,
        description=(
            "The IANA time zone the schedule is read in, e.g. Europe/Berlin: occurrences keep their local time "
            "across daylight-saving changes. Required: there is no cluster default. The operator's admission "
            "webhook checks that the zone exists."
        ),
        json_schema_extra=_rules((_matches(TIME_ZONE_PATTERN), f"is not a time zone name; {TIME_ZONE_FORM}")),
    )
    cron: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CRON_LENGTH,
        description=(
            "A five-field cron schedule in spec.timeZone, e.g. '0 9 * * 1-5'. A time in the spring-forward gap "
            "fires at the end of the gap; a time that occurs twice (fall back) fires once, the first time. "
            "Exactly one of cron, rrule and ical."
        ),
        json_schema_extra=_rules((_matches(CRON_PATTERN), f"must have five fields; {CRON_FORM}")),
    )
    rrule: RRuleSource | None = Field(
        default=None,
        description="An RFC 5545 recurrence rule with a local dtstart. Exactly one of cron, rrule and ical.",
    )
    ical: ICalSource | None = Field(
        default=None,
        description=(
            "An iCalendar feed: one child per event occurrence, each with the event's meeting link unless "
            "botTemplate.spec.meetingUrl is set. Exactly one of cron, rrule and ical."
        ),
    )
    bot_template: BotTemplate = Field(description="The ScheduledBot each occurrence gets.")
    horizon_seconds: int = Field(
        default=DEFAULT_HORIZON_SECONDS,
        ge=60,
        le=MAX_HORIZON_SECONDS,
        description=(
            "How far ahead children exist: an occurrence's ScheduledBot is created when its start is at most "
            "this many seconds away (default 86400, one day; at most 2419200, 28 days)."
        ),
    )
    starting_deadline_seconds: int = Field(
        default=DEFAULT_STARTING_DEADLINE_SECONDS,
        ge=0,
        le=MAX_STARTING_DEADLINE_SECONDS,
        description=(
            "How late an occurrence's ScheduledBot may still be created (after operator downtime, a resume, or "
            "an event added at the last minute); it then joins as soon as it can. Later occurrences are counted "
            "in status.missedCount, with one Event, and never created."
        ),
    )
    suspend: bool = Field(
        default=False,
        description=(
            "Pause: no new children; children not yet staged are deleted, staged and running ones are kept. "
            "Resuming creates no occurrence whose startingDeadlineSeconds has passed."
        ),
    )
    # Not strict: the apiserver sends the enum's value, a string.
    concurrency_policy: ConcurrencyPolicy = Field(
        default=ConcurrencyPolicy.ALLOW,
        strict=False,
        description=(
            "When an occurrence starts while this schedule's bot of an earlier occurrence is still in the same "
            "meeting: Allow (both), Forbid (the new occurrence is skipped and counted as missed) or Replace "
            "(the earlier bot is deleted, so it leaves, and the new one joins)."
        ),
    )
    successful_history_limit: int = Field(
        default=3,
        ge=0,
        le=MAX_HISTORY_LIMIT,
        description="How many ended children are kept; older ones are deleted.",
    )
    failed_history_limit: int = Field(
        default=1,
        ge=0,
        le=MAX_HISTORY_LIMIT,
        description="How many failed children are kept; older ones are deleted.",
    )


class NextOccurrence(_Model):
    """One upcoming occurrence."""

    time: str = Field(
        max_length=MAX_TIMESTAMP_LENGTH,
        description="When its bot joins (RFC 3339 UTC).",
        json_schema_extra={"format": "date-time"},
    )
    name: str | None = Field(
        default=None,
        max_length=MAX_NAME_REF_LENGTH,
        description="Its ScheduledBot, once created (within horizonSeconds).",
    )
    skipped: str | None = Field(
        default=None,
        max_length=MAX_MESSAGE_LENGTH,
        description=(
            "Why it gets no bot, e.g. another active ScheduledBot joins the same meeting at the same time, or "
            "the schedule is suspended."
        ),
    )


class SettledOccurrence(_Model):
    """An occurrence that is over (its bot joined, ended, failed or was skipped): never created again."""

    name: str = Field(max_length=MAX_NAME_REF_LENGTH, description="The occurrence's ScheduledBot name.")
    time: str = Field(
        max_length=MAX_TIMESTAMP_LENGTH,
        description="The occurrence's start (RFC 3339 UTC).",
        json_schema_extra={"format": "date-time"},
    )


class ScheduleCondition(Condition):
    """One aspect of the schedule's status, in the shape of metav1.Condition."""

    type: str = Field(
        max_length=316,
        pattern=_CONDITION_TYPE_PATTERN,
        description="Ready, Reconciling or Stalled, as kstatus reads them, or SourceHealthy (ical feeds).",
    )


class BotScheduleStatus(_Model):
    """What the operator observed and did. Written only by the operator, through the status subresource."""

    source: str | None = Field(
        default=None,
        max_length=MAX_SOURCE_LENGTH,
        description="The source in one line, e.g. 'cron 0 9 * * 1' or 'ical secret/key' (the SOURCE column).",
    )
    next: list[NextOccurrence] | None = Field(
        default=None,
        max_length=MAX_NEXT,
        description=f"The next occurrences (at most {MAX_NEXT}), with their ScheduledBots once created.",
    )
    active: list[str] | None = Field(
        default=None,
        max_length=MAX_ACTIVE,
        description="The children that are neither ended nor failed.",
        json_schema_extra={"items": {"type": "string", "maxLength": MAX_NAME_REF_LENGTH}},
    )
    active_count: int | None = Field(default=None, ge=0, description="How many children are active.")
    last_schedule_time: str | None = Field(
        default=None,
        max_length=MAX_TIMESTAMP_LENGTH,
        description="The start of the latest occurrence that has begun and had a ScheduledBot.",
        json_schema_extra={"format": "date-time"},
    )
    last_sync_time: str | None = Field(
        default=None,
        max_length=MAX_TIMESTAMP_LENGTH,
        description="ical: when the feed was last read successfully.",
        json_schema_extra={"format": "date-time"},
    )
    missed_count: int | None = Field(
        default=None,
        ge=0,
        description=(
            "How many occurrences got no bot because they were later than startingDeadlineSeconds when the "
            "operator could act (downtime, suspension) or because concurrencyPolicy Forbid skipped them."
        ),
    )
    skipped: list[NextOccurrence] | None = Field(
        default=None,
        max_length=MAX_SKIPPED,
        description="Occurrences that started recently without a bot of this schedule, and why (e.g. a duplicate).",
    )
    settled: list[SettledOccurrence] | None = Field(
        default=None,
        max_length=MAX_SETTLED,
        description=(
            "Occurrences that are over, kept while they are within startingDeadlineSeconds so that they are "
            "never created again (for instance after their ScheduledBot was pruned)."
        ),
    )
    planned_through: str | None = Field(
        default=None,
        max_length=MAX_TIMESTAMP_LENGTH,
        description=(
            "The start of the latest occurrence the operator has acted on; occurrences after it that are past "
            "their deadline when seen are missed."
        ),
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the spec the operator last acted on.",
    )
    conditions: list[ScheduleCondition] | None = Field(
        default=None,
        max_length=MAX_CONDITIONS,
        description=(
            "Ready, Reconciling and Stalled, as kstatus reads them, and SourceHealthy for feeds: False, with the "
            "reason, while the feed cannot be read or parsed (its children are then left as they are)."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


# -- the typed view ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidCron:
    expression: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidRRule:
    #: Naive: local wall-clock times in the schedule's zone.
    dtstart: datetime
    rule: str
    exdates: tuple[datetime, ...]
    rdates: tuple[datetime, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidICal:
    secret_name: str
    secret_key: str
    poll_interval: timedelta
    summary_regex: re.Pattern[str] | None
    #: Lower case, without mailto:.
    organizer: str | None
    include_all_day: bool


ValidSource = ValidCron | ValidRRule | ValidICal


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidSchedule:
    """A BotSchedule spec that passed every check that needs no clock."""

    zone: ZoneInfo
    source: ValidSource
    #: The children's spec without joinAt (camelCase, defaults filled in); meetingUrl only when the template sets it.
    template_spec: Mapping[str, Any]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    horizon: timedelta
    starting_deadline: timedelta
    suspend: bool
    concurrency_policy: ConcurrencyPolicy
    successful_history_limit: int
    failed_history_limit: int

    @property
    def kind(self) -> SourceKind:
        if isinstance(self.source, ValidCron):
            return SourceKind.CRON
        return SourceKind.RRULE if isinstance(self.source, ValidRRule) else SourceKind.ICAL

    @property
    def meeting_url(self) -> str | None:
        url = self.template_spec.get("meetingUrl")
        return url if isinstance(url, str) else None

    def describe(self) -> str:
        """The source in one line, for status.source."""
        source = self.source
        if isinstance(source, ValidCron):
            text = f"cron {source.expression}"
        elif isinstance(source, ValidRRule):
            text = f"rrule {source.rule}"
        else:
            text = f"ical {source.secret_name}/{source.secret_key}"
        return text[:MAX_SOURCE_LENGTH]


#: Any real instant works to check that a cron expression parses.
_PROBE: Final = datetime(2000, 1, 1)
#: Stands in for joinAt when the template is checked as a ScheduledBot spec.
_PROBE_JOIN_AT: Final = "2000-01-01T00:00:00Z"


def parse_schedule_spec(spec: object, *, extra_hosts: frozenset[str]) -> ValidSchedule:
    """`spec` (a BotSchedule's `.spec`, as the apiserver returns it) as a `ValidSchedule`.

    Raises `SpecError` listing every problem, in field order, each naming its
    field. `extra_hosts` is the operator's admin setting for meeting URLs (see
    `detect_platform`). Nothing here reads the clock or the network.
    """
    if not isinstance(spec, Mapping):
        raise SpecError([FieldError("spec", "is required" if spec is None else "must be an object")])
    try:
        raw = BotScheduleSpec.model_validate(spec)
    except ValidationError as invalid:
        errors = _field_errors(invalid)
        raise SpecError(sorted(errors + _beside(spec, errors, extra_hosts), key=_field_order)) from None
    zone, errors = _zone(raw.time_zone)
    sources = [name for name in ("cron", "rrule", "ical") if getattr(raw, name) is not None]
    source: ValidSource | None = None
    if len(sources) != 1:
        given = ", ".join(f"spec.{name}" for name in sources) or "none"
        errors.append(FieldError("spec", f"must have exactly one of cron, rrule and ical (given: {given})"))
    else:
        source, problems = _source(raw, zone)
        errors += problems
    template = raw.bot_template.spec.model_dump(by_alias=True, exclude_none=True)
    errors += _template(template, is_feed=raw.ical is not None, extra_hosts=extra_hosts)
    if errors or source is None or zone is None:
        raise SpecError(sorted(errors, key=_field_order))
    metadata = raw.bot_template.metadata
    return ValidSchedule(
        zone=zone,
        source=source,
        template_spec=template,
        labels=dict(metadata.labels or {}) if metadata else {},
        annotations=dict(metadata.annotations or {}) if metadata else {},
        horizon=timedelta(seconds=raw.horizon_seconds),
        starting_deadline=timedelta(seconds=raw.starting_deadline_seconds),
        suspend=raw.suspend,
        concurrency_policy=raw.concurrency_policy,
        successful_history_limit=raw.successful_history_limit,
        failed_history_limit=raw.failed_history_limit,
    )


def _source(raw: BotScheduleSpec, zone: ZoneInfo | None) -> tuple[ValidSource | None, list[FieldError]]:
    if raw.cron is not None:
        return _cron(raw.cron)
    if raw.rrule is not None:
        return _rrule(raw.rrule, zone)
    assert raw.ical is not None
    return _ical(raw.ical)


def _beside(spec: Mapping[str, Any], errors: list[FieldError], extra_hosts: frozenset[str]) -> list[FieldError]:
    """The zone's, source's and template's own problems, when a field failed the schema: one apply shows all."""
    failed = {error.path.split("[")[0] for error in errors}
    out: list[FieldError] = []
    template = (spec.get("botTemplate") or {}).get("spec") if isinstance(spec.get("botTemplate"), Mapping) else None
    if isinstance(template, Mapping):
        out += [
            error
            for error in _template(dict(template), is_feed=spec.get("ical") is not None, extra_hosts=extra_hosts)
            if error.path not in failed
        ]
    zone = None
    text = spec.get("timeZone")
    if isinstance(text, str) and "spec.timeZone" not in failed:
        zone, problems = _zone(text)
        out += problems
    for name, model in (("rrule", RRuleSource), ("ical", ICalSource)):
        if any(path.startswith(f"spec.{name}") for path in failed) or not isinstance(spec.get(name), Mapping):
            continue
        try:
            checked = model.model_validate(spec[name])
        except ValidationError:
            continue
        out += _rrule(checked, zone)[1] if isinstance(checked, RRuleSource) else _ical(checked)[1]
    cron = spec.get("cron")
    if isinstance(cron, str) and "spec.cron" not in failed:
        out += _cron(cron)[1]
    return out


def _zone(name: str) -> tuple[ZoneInfo | None, list[FieldError]]:
    try:
        return ZoneInfo(name), []
    except (ZoneInfoNotFoundError, ValueError):
        return None, [FieldError("spec.timeZone", f"{quote_value(name)} is not a known time zone; {TIME_ZONE_FORM}")]


def _cron(expression: str) -> tuple[ValidCron | None, list[FieldError]]:
    text = " ".join(expression.split())
    problem = None
    if len(text.split(" ")) != 5:
        problem = f"does not have five fields; {CRON_FORM}"
    else:
        try:
            CronSim(text, _PROBE)
        except CronSimError as error:
            problem = f"is not a valid cron schedule ({error}); {CRON_FORM}"
    if problem:
        return None, [FieldError("spec.cron", f"{quote_value(expression)} {problem}")]
    return ValidCron(expression=text), []


def parse_local_time(text: str, field: str) -> datetime:
    """A local wall-clock time (naive); `FieldValueError`-style `ValueError` naming `field` otherwise."""
    if re.fullmatch(LOCAL_TIME_PATTERN, text) is None:
        raise ValueError(f"{field}: {quote_value(text)} is not a local date-time; {LOCAL_TIME_FORM}")
    try:
        return datetime.strptime(text.replace(" ", "T"), _LOCAL_TIME_FORMAT)
    except ValueError:
        raise ValueError(f"{field}: {quote_value(text)} is not a real calendar date; {LOCAL_TIME_FORM}") from None


def _local_times(texts: list[str] | None, field: str) -> tuple[tuple[datetime, ...], list[FieldError]]:
    out, errors = [], []
    for index, text in enumerate(texts or ()):
        try:
            out.append(parse_local_time(text, f"{field}[{index}]"))
        except ValueError as problem:
            path, _, detail = str(problem).partition(": ")
            errors.append(FieldError(path, detail))
    return tuple(out), errors


def _rrule(source: RRuleSource, zone: ZoneInfo | None) -> tuple[ValidRRule | None, list[FieldError]]:
    errors: list[FieldError] = []
    dtstart = None
    try:
        dtstart = parse_local_time(source.dtstart, "spec.rrule.dtstart")
    except ValueError as problem:
        errors.append(FieldError("spec.rrule.dtstart", str(problem).partition(": ")[2]))
    exdates, problems = _local_times(source.exdates, "spec.rrule.exdates")
    errors += problems
    rdates, problems = _local_times(source.rdates, "spec.rrule.rdates")
    errors += problems
    rule = source.rule.strip()
    if not re.fullmatch(RULE_PATTERN, rule) or "FREQ=" not in rule.upper():
        errors.append(FieldError("spec.rrule.rule", f"{quote_value(source.rule)} is not an RRULE value; {RULE_FORM}"))
    elif dtstart is not None and zone is not None:
        wrong = _rule_problem(rule, dtstart.replace(tzinfo=zone))
        if wrong is not None:
            errors.append(FieldError("spec.rrule.rule", f"{quote_value(source.rule)} {wrong}; {RULE_FORM}"))
    if errors or dtstart is None:
        return None, errors
    return ValidRRule(dtstart=dtstart, rule=rule, exdates=exdates, rdates=rdates), []


#: How many of each frequency's periods make 400 Gregorian years, after which the calendar repeats exactly
#: (146,097 days, 20,871 weeks).
PERIODS_PER_CYCLE: Final = {
    YEARLY: 400,
    MONTHLY: 4800,
    WEEKLY: 20871,
    DAILY: 146097,
    HOURLY: 146097 * 24,
    MINUTELY: 146097 * 24 * 60,
    SECONDLY: 146097 * 24 * 3600,
}
_CYCLE_YEARS: Final = 400
#: The last cycle before dateutil's MAXYEAR (9999), where the never-occurs check looks.
_LAST_CYCLE: Final = 9599


def rule_parts(parsed: rrule) -> tuple[int, int, int | None]:
    """(frequency, interval, count) of a parsed rule; dateutil keeps them as attributes without accessors."""
    fields = vars(parsed)
    return fields["_freq"], fields["_interval"], fields["_count"]


def ever_occurs(parsed: rrule) -> bool:
    """Whether the rule has an occurrence at all, ignoring COUNT and UNTIL, in bounded time.

    dateutil looks for the next occurrence of a rule that has none (BYMONTHDAY=30
    with BYMONTH=2, a BYSETPOS past every set) until the year 9999: up to 13 s of
    CPU for a minutely rule. The calendar repeats every 400 years, so a rule that
    occurs does so within 400 years of any start in phase with its own: the
    check moves dtstart by whole cycles (a multiple of its interval) to the last
    cycle before 9999, where dateutil's own bound ends the search.
    """
    freq, interval, _ = rule_parts(parsed)
    start: datetime = vars(parsed)["_dtstart"]
    periods = PERIODS_PER_CYCLE[freq]
    cycles = interval // math.gcd(periods, interval)  # so many cycles are a whole number of intervals
    step = _CYCLE_YEARS * cycles
    cycles_to_last = -(-(_LAST_CYCLE - start.year) // step)  # rounded up: the search starts in the last cycle
    if cycles_to_last < 1 or start.year + cycles_to_last * step > datetime.max.year:
        return True  # an interval this long scans few periods: the search is short anyway
    shifted = start.replace(year=start.year + cycles_to_last * step)
    probe = parsed.replace(dtstart=shifted, count=None, until=None)
    return next(iter(probe), None) is not None


#: Parts a rule more frequent than daily may not use: with them a rule that never occurs costs dateutil
#: seconds to minutes of CPU per lookup (it searches each hour or minute until the year 9999).
_SUB_DAILY_REFUSED: Final = ("BYSETPOS", "BYMONTH", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO")


def _rule_problem(rule: str, dtstart: datetime) -> str | None:
    try:
        parsed = rrulestr(rule, dtstart=dtstart)
    except (ValueError, TypeError) as error:
        return f"is not a valid RRULE ({error})"
    if not isinstance(parsed, rrule):
        return "is not a single RRULE"
    freq, _, _ = rule_parts(parsed)
    if freq == SECONDLY:
        return "repeats by the second (FREQ=SECONDLY is not supported)"
    parts = {part.split("=", 1)[0] for part in rule.upper().removeprefix("RRULE:").split(";")}
    refused = sorted(parts.intersection(_SUB_DAILY_REFUSED))
    if freq in (HOURLY, MINUTELY) and refused:
        return f"uses {', '.join(refused)} with an hourly or minutely frequency (only BYDAY, BYHOUR and BYMINUTE)"
    if not ever_occurs(parsed):
        return "never occurs (e.g. February 30)"
    return None


def _ical(source: ICalSource) -> tuple[ValidICal | None, list[FieldError]]:
    filters = source.filters or ICalFilters()
    pattern = None
    if filters.summary_regex is not None:
        try:
            pattern = re.compile(filters.summary_regex)
        except re.error as error:
            text = quote_value(filters.summary_regex)
            return None, [FieldError("spec.ical.filters.summaryRegex", f"{text} is not a regular expression ({error})")]
    organizer = filters.organizer.strip().lower().removeprefix("mailto:") if filters.organizer else None
    return (
        ValidICal(
            secret_name=source.url_secret_ref.name,
            secret_key=source.url_secret_ref.key,
            poll_interval=timedelta(seconds=source.poll_interval_seconds),
            summary_regex=pattern,
            organizer=organizer,
            include_all_day=filters.include_all_day,
        ),
        [],
    )


_TEMPLATE_PATH: Final = "spec.botTemplate.spec"


def _template(template: dict[str, Any], *, is_feed: bool, extra_hosts: frozenset[str]) -> list[FieldError]:
    """The template, checked as the ScheduledBot spec a child would get."""
    if "template" in template:
        return [FieldError(f"{_TEMPLATE_PATH}.template", _INLINE_TEMPLATE.removeprefix(f"{_TEMPLATE_PATH}.template "))]
    if "meetingUrl" not in template:
        if not is_feed:
            return [
                FieldError(
                    f"{_TEMPLATE_PATH}.meetingUrl",
                    "is required for cron and rrule schedules (only calendar feeds give each event its own link)",
                )
            ]
        # Any supported link stands in for the events' own, which are checked when they are read.
        template = {**template, "meetingUrl": "https://zoom.us/j/1"}
    try:
        parse_spec({**template, "joinAt": _PROBE_JOIN_AT}, extra_hosts=extra_hosts)
    except SpecError as invalid:
        return [
            FieldError(_TEMPLATE_PATH + error.path.removeprefix("spec"), error.detail)
            for error in invalid.errors
            if error.path != "spec.joinAt"
        ]
    return []


_FIELD_ORDER: Final = {
    f"spec.{field.alias}": index for index, field in enumerate(BotScheduleSpec.model_fields.values())
}


_TEMPLATE_ORDER: Final = {
    f"{_TEMPLATE_PATH}.{field.alias}": index for index, field in enumerate(ScheduledBotSpec.model_fields.values())
}


def _field_order(error: FieldError) -> tuple[int, int, str]:
    parts = error.path.split("[")[0].split(".")
    top = ".".join(parts[:2])
    within = _TEMPLATE_ORDER.get(".".join(parts[:4]), len(_TEMPLATE_ORDER))
    return _FIELD_ORDER.get(top, -1 if error.path == "spec" else len(_FIELD_ORDER)), within, error.path
