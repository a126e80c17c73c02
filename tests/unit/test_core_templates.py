"""Which class and template a bot gets, and what a template references (for the access review)."""

from __future__ import annotations

from typing import Any

import pytest

from scheduledbot.api.botclass import BrokenClass, ValidBotClass
from scheduledbot.api.errors import FieldError
from scheduledbot.core.templates import (
    Reference,
    ReferenceKind,
    TemplateSource,
    bot_class_for,
    effective_template,
    references,
)

CLASS_TEMPLATE = {"spec": {"containers": [{"name": "bot", "image": "recorder:2"}]}}
INLINE = {"spec": {"containers": [{"name": "bot", "image": "mine:1"}]}}
DEFAULT = {"spec": {"containers": [{"name": "bot", "image": "demo:1"}]}}


def klass(name: str, *, default: bool = False, inline: bool = False, template: Any = CLASS_TEMPLATE) -> ValidBotClass:
    return ValidBotClass(
        name=name,
        is_default=default,
        template=template,
        allowed_platforms=None,
        allow_inline_template=inline,
        max_bot_config_bytes=32768,
        max_duration_seconds=None,
        max_staging_lead_seconds=None,
    )


def broken(name: str, *, default: bool = False) -> BrokenClass:
    return BrokenClass(name=name, is_default=default, problems=("spec.template: is nested more than 32 levels deep",))


STD = klass("std")
DEF = klass("def", default=True)


@pytest.mark.parametrize(
    ("name", "classes", "expected"),
    [
        pytest.param("std", {"std": STD, "def": DEF}, STD, id="the named class, even when another is the default"),
        pytest.param(None, {"std": STD, "def": DEF}, DEF, id="the default class when none is named"),
        pytest.param(None, {"std": STD}, None, id="no class at all when none is named and none is the default"),
        pytest.param(None, {}, None, id="no class at all when there are none"),
        pytest.param(
            "gone",
            {"std": STD},
            'spec.botClassName: BotClass "gone" does not exist',
            id="an error for a class that does not exist",
        ),
        pytest.param(
            None,
            {"b": klass("b", default=True), "a": klass("a", default=True)},
            "spec.botClassName: is required: several BotClasses are marked default (a, b); name one of them",
            id="an error when several classes are the default, as IngressClass does",
        ),
        pytest.param(
            "bad",
            {"bad": broken("bad")},
            'spec.botClassName: BotClass "bad" is invalid and cannot be used: '
            "spec.template: is nested more than 32 levels deep",
            id="an error naming the problems of a class that fails its checks",
        ),
        pytest.param(
            None,
            {"bad": broken("bad", default=True)},
            'spec.botClassName: BotClass "bad" is invalid and cannot be used: '
            "spec.template: is nested more than 32 levels deep",
            id="an error for a default class that fails its checks",
        ),
    ],
)
def test_a_bot_gets(name: str | None, classes: dict[str, Any], expected: Any) -> None:
    found = bot_class_for(name, classes)
    assert (str(found) if isinstance(found, FieldError) else found) == expected


def test_an_inline_template_replaces_the_class_template_where_the_class_allows_it() -> None:
    found = effective_template(inline=INLINE, bot_class=klass("open", inline=True), default=DEFAULT)
    assert not isinstance(found, FieldError)
    assert (found.template, found.source, found.prefix) == (INLINE, TemplateSource.INLINE, "spec.template")


def test_an_inline_template_is_refused_where_the_class_does_not_allow_it() -> None:
    found = effective_template(inline=INLINE, bot_class=STD, default=DEFAULT)
    assert str(found) == (
        'spec.template: not allowed: BotClass "std" does not allow inline templates '
        "(its spec.allowInlineTemplate is false); remove spec.template to use the class's"
    )


def test_an_inline_template_without_any_class_is_left_to_the_access_review() -> None:
    found = effective_template(inline=INLINE, bot_class=None, default=DEFAULT)
    assert not isinstance(found, FieldError) and found.source is TemplateSource.INLINE


def test_without_an_inline_template_the_class_template_then_the_operators_default() -> None:
    by_class = effective_template(inline=None, bot_class=STD, default=DEFAULT)
    assert not isinstance(by_class, FieldError)
    assert (by_class.template, by_class.source, by_class.prefix) == (
        CLASS_TEMPLATE,
        TemplateSource.CLASS,
        'BotClass "std" spec.template',
    )
    for bot_class in (None, klass("bare", template=None)):
        found = effective_template(inline=None, bot_class=bot_class, default=DEFAULT)
        assert not isinstance(found, FieldError)
        assert (found.template, found.source) == (DEFAULT, TemplateSource.DEFAULT)


EVERYTHING: dict[str, Any] = {
    "spec": {
        "serviceAccountName": "recorder",
        "imagePullSecrets": [{"name": "registry"}],
        "volumes": [
            {"name": "a", "secret": {"secretName": "tls"}},
            {"name": "b", "configMap": {"name": "settings"}},
            {"name": "c", "persistentVolumeClaim": {"claimName": "recordings"}},
            {
                "name": "d",
                "projected": {
                    "sources": [
                        {"secret": {"name": "p-secret"}},
                        {"configMap": {"name": "p-config"}},
                        {"serviceAccountToken": {"path": "token"}},
                    ]
                },
            },
            {"name": "e", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-creds"}}},
            {"name": "f", "emptyDir": {}},
        ],
        "initContainers": [{"name": "init", "envFrom": [{"configMapRef": {"name": "init-env"}}]}],
        "containers": [
            {
                "name": "bot",
                "env": [
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "modes", "key": "m"}}},
                    {"name": "PLAIN", "value": "x"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
                "envFrom": [{"secretRef": {"name": "api-keys"}}],
            }
        ],
    }
}


def test_every_kind_of_reference_is_found_with_its_field() -> None:
    p = "spec.template.spec"
    secret, config, claim, account = (
        ReferenceKind.SECRET,
        ReferenceKind.CONFIG_MAP,
        ReferenceKind.PERSISTENT_VOLUME_CLAIM,
        ReferenceKind.SERVICE_ACCOUNT,
    )
    assert references(EVERYTHING, prefix="spec.template") == [
        Reference(kind=account, name="recorder", path=f"{p}.serviceAccountName"),
        Reference(kind=secret, name="registry", path=f"{p}.imagePullSecrets[0].name"),
        Reference(kind=secret, name="tls", path=f"{p}.volumes[0].secret.secretName"),
        Reference(kind=config, name="settings", path=f"{p}.volumes[1].configMap.name"),
        Reference(kind=claim, name="recordings", path=f"{p}.volumes[2].persistentVolumeClaim.claimName"),
        Reference(kind=secret, name="p-secret", path=f"{p}.volumes[3].projected.sources[0].secret.name"),
        Reference(kind=config, name="p-config", path=f"{p}.volumes[3].projected.sources[1].configMap.name"),
        Reference(kind=secret, name="csi-creds", path=f"{p}.volumes[4].csi.nodePublishSecretRef.name"),
        Reference(kind=config, name="init-env", path=f"{p}.initContainers[0].envFrom[0].configMapRef.name"),
        Reference(kind=secret, name="db", path=f"{p}.containers[0].env[0].valueFrom.secretKeyRef.name"),
        Reference(kind=config, name="modes", path=f"{p}.containers[0].env[1].valueFrom.configMapKeyRef.name"),
        Reference(kind=secret, name="api-keys", path=f"{p}.containers[0].envFrom[0].secretRef.name"),
    ]


def test_a_template_without_references_has_none_and_a_malformed_one_does_not_crash() -> None:
    assert references(INLINE, prefix="spec.template") == []
    malformed = {"spec": {"volumes": "x", "containers": [{"env": "x", "envFrom": [3]}], "imagePullSecrets": [None]}}
    assert references(malformed, prefix="spec.template") == []
