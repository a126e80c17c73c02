"""The bot Pod the operator creates, or the reason it creates none.

Why the operator checks again
=============================
The admission webhook checks a ScheduledBot when it is applied, but it may not
have seen it: `failurePolicy: Ignore` admits bots while the operator is down, a
webhook configuration may have been removed, and a BotClass may change or go
away after its bots were admitted. So the pass that stages a bot builds its Pod
by the same rules as the webhook (`core.templates`: the inline template, else the
class's, else the operator's default; the class's limits; the Pod Security
baseline) and, when a rule refuses it, fails the bot at once with a reason that
names the cause instead of retrying until the join deadline.

Reasons
=======
- `BotClassNotFound`: the named class does not exist (deleted since admission).
  The bot fails rather than waits: a class is the platform team's decision, and a
  bot that waited for it would hold its join time hostage to a rename. Applying
  the bot again once the class exists schedules it again.
- `InvalidBotClass`: the class exists but fails its own checks, or several classes
  claim to be the default.
- `ClassLimitExceeded`: the bot asks for more than its class allows (platform,
  botConfig size, duration, staging lead).
- `InvalidTemplate`: the template is not allowed (an inline one where the class
  forbids it), cannot be built into a Pod, or breaks the Pod Security baseline.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from scheduledbot.api.botclass import ValidBotClass
from scheduledbot.api.errors import FieldError
from scheduledbot.api.models import ValidSpec
from scheduledbot.core.children import build_pod
from scheduledbot.core.model import Defaults
from scheduledbot.core.podsecurity import baseline_violations
from scheduledbot.core.templates import ClassCatalog, EffectiveTemplate, bot_class_for, effective_template

BOT_CLASS_NOT_FOUND: Final = "BotClassNotFound"
INVALID_BOT_CLASS: Final = "InvalidBotClass"
CLASS_LIMIT_EXCEEDED: Final = "ClassLimitExceeded"
INVALID_TEMPLATE: Final = "InvalidTemplate"


@dataclass(frozen=True, slots=True, kw_only=True)
class BotPod:
    """The Pod to create, and where its template came from."""

    pod: dict[str, Any]
    template: EffectiveTemplate
    bot_class: ValidBotClass | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Why no Pod: a status reason and every problem found, each naming its field."""

    reason: str
    problems: tuple[str, ...]

    @property
    def message(self) -> str:
        return "; ".join(self.problems)


def chosen_class(spec: ValidSpec, classes: ClassCatalog) -> ValidBotClass | Refusal | None:
    """The bot's class (None: no class applies), or why none can be used."""
    chosen = bot_class_for(spec.bot_class_name, classes)
    if not isinstance(chosen, FieldError):
        return chosen
    missing = spec.bot_class_name is not None and spec.bot_class_name not in classes
    return Refusal(reason=BOT_CLASS_NOT_FOUND if missing else INVALID_BOT_CLASS, problems=(str(chosen),))


def bot_pod(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: ValidSpec,
    classes: ClassCatalog,
    default_template: Mapping[str, Any],
    defaults: Defaults,
    self_join_delay_seconds: float,
    join_at: datetime,
    token_secret: str,
) -> BotPod | Refusal:
    """The bot's Pod, by the rules of the module's docstring; a `Refusal` names every problem."""
    chosen = chosen_class(spec, classes)
    if isinstance(chosen, Refusal):
        return chosen
    limits = [str(error) for error in class_rules(spec, chosen)] if chosen is not None else []
    effective = effective_template(inline=spec.template, bot_class=chosen, default=default_template)
    if isinstance(effective, FieldError):
        return _refusal(limits, [str(effective)])
    try:
        pod = build_pod(
            name=name,
            namespace=namespace,
            uid=uid,
            spec=spec,
            template=effective.template,
            join_at=join_at,
            join_deadline_seconds=spec.join_deadline_seconds or defaults.join_deadline_seconds,
            max_duration_seconds=max_duration(spec, chosen, defaults),
            self_join_delay_seconds=self_join_delay_seconds,
            token_secret=token_secret,
        )
    except ValueError as error:
        # The builder's own words name the field.
        return _refusal(limits, [f"{effective.prefix}: {error}"])
    except (TypeError, AttributeError, KeyError):
        # A field the shape checks do not type has the wrong type (`ports: "x"`).
        return _refusal(
            limits, [f"{effective.prefix}: the bot Pod cannot be built from this template: a field has the wrong type"]
        )
    baseline = [str(error) for error in baseline_violations(pod, prefix=effective.prefix)]
    if limits or baseline:
        return _refusal(limits, baseline)
    return BotPod(pod=pod, template=effective, bot_class=chosen)


def _refusal(limits: list[str], template: list[str]) -> Refusal:
    return Refusal(reason=CLASS_LIMIT_EXCEEDED if limits else INVALID_TEMPLATE, problems=(*limits, *template))


def class_rules(spec: ValidSpec, bot_class: ValidBotClass) -> list[FieldError]:
    """What `bot_class` refuses in `spec`: platforms, botConfig size, duration and lead."""
    out = []
    named = f'BotClass "{bot_class.name}"'
    if bot_class.allowed_platforms is not None and spec.platform not in bot_class.allowed_platforms:
        allowed = ", ".join(sorted(bot_class.allowed_platforms))
        out.append(FieldError("spec.meetingUrl", f"{spec.platform} meetings are not allowed by {named} ({allowed})"))
    if spec.bot_config is not None:
        size = len(json.dumps(spec.bot_config, separators=(",", ":"), ensure_ascii=False).encode())
        if size > bot_class.max_bot_config_bytes:
            out.append(
                FieldError(
                    "spec.botConfig",
                    f"is {size} bytes as JSON; {named} allows at most {bot_class.max_bot_config_bytes} bytes",
                )
            )
    for path, value, limit in (
        ("spec.maxDurationSeconds", spec.max_duration_seconds, bot_class.max_duration_seconds),
        ("spec.stagingLeadSeconds", spec.staging_lead_seconds, bot_class.max_staging_lead_seconds),
    ):
        if value is not None and limit is not None and value > limit:
            out.append(FieldError(path, f"{value} is more than {named} allows ({limit})"))
    return out


def max_duration(spec: ValidSpec, bot_class: ValidBotClass | None, defaults: Defaults) -> int:
    """The bot's stay: its own, else the operator's default cut to its class's limit."""
    if spec.max_duration_seconds is not None:
        return spec.max_duration_seconds
    return class_defaults(defaults, bot_class).max_duration_seconds


def class_defaults(defaults: Defaults, bot_class: ValidBotClass | None) -> Defaults:
    """The operator's defaults, cut to what `bot_class` allows (its duration and staging lead limits)."""
    if bot_class is None:
        return defaults
    changes: dict[str, int] = {}
    if bot_class.max_duration_seconds is not None:
        changes["max_duration_seconds"] = min(defaults.max_duration_seconds, bot_class.max_duration_seconds)
    if bot_class.max_staging_lead_seconds is not None:
        changes["staging_lead_seconds"] = min(defaults.staging_lead_seconds, bot_class.max_staging_lead_seconds)
    return dataclasses.replace(defaults, **changes) if changes else defaults
