"""The bot Pod the operator builds when it stages a bot, or the named reason it builds none; derived tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from scheduledbot.api.botclass import ValidBotClass, load_bot_class
from scheduledbot.api.models import ValidSpec, parse_spec
from scheduledbot.core import tokens
from scheduledbot.core.botpod import BotPod, Refusal, bot_pod, class_defaults
from scheduledbot.core.children import default_template, secret_name
from scheduledbot.core.model import Defaults
from scheduledbot.core.templates import ClassCatalog

JOIN = datetime(2030, 1, 1, 12, tzinfo=UTC)
CONTAINER = {"name": "bot", "image": "registry.example/bot:1"}


def spec(**fields: Any) -> ValidSpec:
    return parse_spec(
        {"meetingUrl": "https://zoom.us/j/123", "joinAt": "2030-01-01T12:00:00Z", **fields}, extra_hosts=frozenset()
    )


def catalog(*classes: dict[str, Any]) -> ClassCatalog:
    loaded = [
        load_bot_class(
            {
                "metadata": {
                    "name": c.pop("name"),
                    "annotations": {"meetingbots.dev/is-default-class": "true"} if c.pop("default", False) else {},
                },
                "spec": c,
            }
        )
        for c in classes
    ]
    return {c.name: c for c in loaded}


def build(bot: ValidSpec, classes: ClassCatalog) -> BotPod | Refusal:
    return bot_pod(
        name="standup",
        namespace="team",
        uid="uid-1",
        spec=bot,
        classes=classes,
        default_template=default_template(image="operator:1"),
        defaults=Defaults(),
        self_join_delay_seconds=2,
        join_at=JOIN,
        token_secret="standup-bot-token-0123456789",
    )


CASES: list[tuple[str, ValidSpec, ClassCatalog, str, str]] = [
    (
        "a class that does not exist",
        spec(botClassName="gone"),
        catalog(),
        "BotClassNotFound",
        'spec.botClassName: BotClass "gone" does not exist',
    ),
    (
        "two default classes",
        spec(),
        catalog({"name": "a", "default": True}, {"name": "b", "default": True}),
        "InvalidBotClass",
        "several BotClasses are marked default (a, b)",
    ),
    (
        "a class that fails its own checks",
        spec(botClassName="broken"),
        catalog({"name": "broken", "limits": {"maxDurationSeconds": 1}}),
        "InvalidBotClass",
        'BotClass "broken" is invalid',
    ),
    (
        "a platform the class does not allow",
        spec(botClassName="teams-only"),
        catalog({"name": "teams-only", "allowedPlatforms": ["microsoft_teams"]}),
        "ClassLimitExceeded",
        'spec.meetingUrl: zoom meetings are not allowed by BotClass "teams-only"',
    ),
    (
        "an inline template where the class forbids it",
        spec(botClassName="closed", template={"spec": {"containers": [CONTAINER]}}),
        catalog({"name": "closed"}),
        "InvalidTemplate",
        'spec.template: not allowed: BotClass "closed" does not allow inline templates',
    ),
    (
        "an inline template beyond the baseline",
        spec(template={"spec": {"hostPID": True, "containers": [CONTAINER]}}),
        catalog(),
        "InvalidTemplate",
        "spec.template.spec.hostPID: not allowed (Pod Security baseline: host namespaces)",
    ),
    (
        "a class template beyond the baseline",
        spec(),
        catalog(
            {"name": "careless", "default": True, "template": {"spec": {"hostIPC": True, "containers": [CONTAINER]}}}
        ),
        "InvalidTemplate",
        'BotClass "careless" spec.template.spec.hostIPC: not allowed',
    ),
    (
        "a template field of the wrong type",
        spec(template={"spec": {"containers": [{**CONTAINER, "ports": "x"}]}}),
        catalog(),
        "InvalidTemplate",
        "the bot Pod cannot be built from this template: a field has the wrong type",
    ),
]


@pytest.mark.parametrize(("bot", "classes", "reason", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bot_that_cannot_get_its_pod_is_refused_with_a_reason_naming_the_cause(
    bot: ValidSpec, classes: ClassCatalog, reason: str, words: str
) -> None:
    refused = build(bot, classes)
    assert isinstance(refused, Refusal)
    assert refused.reason == reason
    assert words in refused.message


def test_the_class_template_is_used_within_the_class_limits_and_mounts_the_keyed_secret() -> None:
    classes = catalog(
        {
            "name": "recorders",
            "default": True,
            "template": {"spec": {"containers": [CONTAINER]}},
            "limits": {"maxDurationSeconds": 600},
        }
    )
    built = build(spec(), classes)
    assert isinstance(built, BotPod)
    container = built.pod["spec"]["containers"][0]
    assert container["image"] == "registry.example/bot:1"
    assert {"name": "MAX_DURATION_SECONDS", "value": "600"} in container["env"]
    volume = next(v for v in built.pod["spec"]["volumes"] if v["name"] == "meetingbots-token")
    assert volume["secret"]["secretName"] == "standup-bot-token-0123456789"


def test_without_a_class_the_operators_default_template_runs() -> None:
    built = build(spec(), catalog())
    assert isinstance(built, BotPod)
    assert built.pod["spec"]["containers"][0]["image"] == "operator:1"


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({}, Defaults(staging_lead_seconds=300, max_duration_seconds=14400)),
        ({"maxStagingLeadSeconds": 60}, Defaults(staging_lead_seconds=60, max_duration_seconds=14400)),
        ({"maxDurationSeconds": 600}, Defaults(staging_lead_seconds=300, max_duration_seconds=600)),
        ({"maxStagingLeadSeconds": 900}, Defaults(staging_lead_seconds=300, max_duration_seconds=14400)),
    ],
    ids=["no-limits", "shorter-lead", "shorter-stay", "a-limit-above-the-default"],
)
def test_a_class_cuts_the_operators_defaults_to_its_limits(limits: dict[str, int], expected: Defaults) -> None:
    (bot_class,) = catalog({"name": "c", "limits": limits}).values()
    assert isinstance(bot_class, ValidBotClass)
    assert class_defaults(Defaults(), bot_class) == expected


KEY = b"k" * 32


def test_tokens_are_stable_per_bot_and_differ_between_bots_keys_and_incarnations() -> None:
    token = tokens.bot_token(KEY, namespace="team", name="standup", uid="u1")
    assert token == tokens.bot_token(KEY, namespace="team", name="standup", uid="u1")
    others = {
        tokens.bot_token(KEY, namespace="team", name="standup", uid="u2"),  # deleted and created again
        tokens.bot_token(KEY, namespace="team", name="retro", uid="u1"),
        tokens.bot_token(KEY, namespace="other", name="standup", uid="u1"),
        tokens.bot_token(b"j" * 32, namespace="team", name="standup", uid="u1"),
    }
    assert token not in others and len(others) == 4
    assert len(token) == 43


def test_the_secret_name_carries_a_keyed_tag_of_the_uid() -> None:
    tag = tokens.secret_tag(KEY, uid="u1")
    assert len(tag) == tokens.TAG_LENGTH and tag != tokens.secret_tag(b"j" * 32, uid="u1")
    assert secret_name("standup", tag) == f"standup-bot-token-{tag}"
    assert len(secret_name("x" * 253, tag)) <= 253
