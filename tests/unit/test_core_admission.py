"""What the admission webhook decides alone (a fixed `now`), and how the answers of the access
review and the dry run become refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from scheduledbot.api.botclass import ValidBotClass
from scheduledbot.api.platforms import Platform
from scheduledbot.core.admission import AccessCheck, Assessment, assess, ratchets, verdict
from scheduledbot.core.children import default_template
from scheduledbot.core.model import Defaults

NOW = datetime(2030, 6, 16, 12, 0, tzinfo=UTC)
SPEC: dict[str, Any] = {"meetingUrl": "https://zoom.us/j/123456789", "joinAt": "2030-06-16T16:00:00Z"}
DEFAULT = default_template(image="demo:1")
PODS = AccessCheck(verb="create", resource="pods")


def klass(name: str = "std", **overrides: Any) -> ValidBotClass:
    fields: dict[str, Any] = {
        "name": name,
        "is_default": True,
        "template": {"spec": {"containers": [{"name": "bot", "image": "recorder:2"}]}},
        "allowed_platforms": None,
        "allow_inline_template": False,
        "max_bot_config_bytes": 32768,
        "max_duration_seconds": None,
        "max_staging_lead_seconds": None,
        **overrides,
    }
    return ValidBotClass(**fields)


def review(
    *, operation: str = "CREATE", old: dict[str, Any] | None = None, classes: Any = None, **spec: Any
) -> Assessment:
    return assess(
        operation=operation,
        name="standup",
        namespace="team-a",
        spec={**SPEC, **spec},
        old_spec=old,
        now=NOW,
        extra_hosts=frozenset(),
        classes={c.name: c for c in classes} if classes else {},
        default_template=DEFAULT,
        defaults=Defaults(),
        self_join_delay_seconds=2,
    )


def env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]}


# --- ratcheting -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "spec", "old", "deleting", "expected"),
    [
        pytest.param("UPDATE", SPEC, dict(SPEC), False, True, id="an update that leaves the spec as it was"),
        pytest.param("UPDATE", {**SPEC, "botName": "x"}, SPEC, True, True, id="any update of a bot being deleted"),
        pytest.param("UPDATE", {**SPEC, "botName": "x"}, SPEC, False, False, id="not an update that changes the spec"),
        pytest.param("CREATE", SPEC, None, False, False, id="never a create"),
    ],
)
def test_ratcheting_admits_without_a_look(operation: str, spec: Any, old: Any, deleting: bool, expected: bool) -> None:
    assert ratchets(operation=operation, spec=spec, old_spec=old, deleting=deleting) is expected


# --- assess -----------------------------------------------------------------------------------------


def test_a_bot_without_class_or_template_runs_the_default_template_and_needs_no_access_review() -> None:
    found = review()
    assert found.refusals == () and found.needs == ()
    assert found.pod is not None and found.pod["spec"]["containers"][0]["image"] == "demo:1"
    assert found.pod["metadata"]["namespace"] == "team-a" and found.pod["metadata"]["name"] == "standup-bot"


def test_a_bot_of_a_class_runs_the_class_template_and_needs_no_access_review() -> None:
    found = review(classes=[klass()])
    assert found.refusals == () and found.needs == ()
    assert found.pod is not None and found.pod["spec"]["containers"][0]["image"] == "recorder:2"
    assert found.template_prefix == 'BotClass "std" spec.template'


def test_the_clock_rules_come_first() -> None:
    assert review(joinAt="2030-06-16T11:00:00Z").refusals == (
        "spec.joinAt cannot be in the past: 2030-06-16T11:00:00Z is before now (2030-06-16T12:00:00Z)",
    )


@pytest.mark.parametrize(
    ("bot_class", "spec", "refusal"),
    [
        pytest.param(
            klass(allowed_platforms=frozenset({Platform.GOOGLE_MEET})),
            {},
            'spec.meetingUrl: zoom meetings are not allowed by BotClass "std" (google_meet)',
            id="a platform the class does not allow",
        ),
        pytest.param(
            klass(max_bot_config_bytes=16),
            {"botConfig": {"recording": "video"}},
            'spec.botConfig: is 21 bytes as JSON; BotClass "std" allows at most 16 bytes',
            id="a botConfig over the class's size",
        ),
        pytest.param(
            klass(max_duration_seconds=3600),
            {"maxDurationSeconds": 7200},
            'spec.maxDurationSeconds: 7200 is more than BotClass "std" allows (3600)',
            id="a stay longer than the class allows",
        ),
        pytest.param(
            klass(max_staging_lead_seconds=600),
            {"stagingLeadSeconds": 3600},
            'spec.stagingLeadSeconds: 3600 is more than BotClass "std" allows (600)',
            id="a lead longer than the class allows",
        ),
        pytest.param(
            klass(),
            {"template": {"spec": {"containers": [{"name": "bot", "image": "mine:1"}]}}},
            'spec.template: not allowed: BotClass "std" does not allow inline templates (its spec.allowInlineTemplate '
            "is false); remove spec.template to use the class's",
            id="an inline template the class does not allow",
        ),
        pytest.param(
            klass(template={"spec": {"containers": [{"name": "bot", "image": "x"}], "hostNetwork": True}}),
            {},
            'BotClass "std" spec.template.spec.hostNetwork: not allowed (Pod Security baseline: host namespaces)',
            id="a class template beyond the baseline, named as the class's",
        ),
    ],
)
def test_the_class_refuses(bot_class: ValidBotClass, spec: dict[str, Any], refusal: str) -> None:
    assert review(classes=[bot_class], **spec).refusals == (refusal,)


def test_a_bot_naming_a_missing_class_is_refused() -> None:
    assert review(botClassName="gone").refusals == ('spec.botClassName: BotClass "gone" does not exist',)


def test_the_operators_default_stay_is_cut_to_the_class_limit_in_the_pod() -> None:
    found = review(classes=[klass(max_duration_seconds=600)])
    assert found.pod is not None and env(found.pod)["MAX_DURATION_SECONDS"] == "600"


def test_an_inline_template_beyond_the_baseline_is_refused_for_everyone_before_any_access_review() -> None:
    template = {
        "spec": {
            "hostNetwork": True,
            "containers": [{"name": "bot", "image": "x", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}],
        }
    }
    found = review(template=template)
    assert found.needs == ()
    assert found.refusals == (
        "spec.template.spec.hostNetwork: not allowed (Pod Security baseline: host namespaces)",
        'spec.template.spec.containers[0].securityContext.capabilities.add[0]: "SYS_ADMIN" is not allowed '
        "(Pod Security baseline: capabilities)",
    )


INLINE: dict[str, Any] = {
    "spec": {
        "serviceAccountName": "admin-sa",
        "containers": [{"name": "bot", "image": "mine:1", "envFrom": [{"secretRef": {"name": "db"}}]}],
    }
}


def test_an_inline_template_needs_its_author_to_create_the_pod_and_read_what_it_references() -> None:
    found = review(template=INLINE, classes=[klass(allow_inline_template=True)])
    assert found.refusals == ()
    assert [(n.path, n.check) for n in found.needs] == [
        ("spec.template", PODS),
        ("spec.template.spec.serviceAccountName", PODS),
        (
            "spec.template.spec.containers[0].envFrom[0].secretRef.name",
            AccessCheck(verb="get", resource="secrets", name="db"),
        ),
    ]
    assert found.checks == (PODS, AccessCheck(verb="get", resource="secrets", name="db"))


# --- verdict ------------------------------------------------------------------------------------------


def test_an_author_who_may_do_all_of_it_is_admitted() -> None:
    found = review(template=INLINE)
    assert verdict(found, user="bob", allowed=dict.fromkeys(found.checks, True), dry_run_refusal=None) == []


def test_an_author_who_may_only_create_scheduled_bots_is_refused_at_every_field() -> None:
    found = review(template=INLINE)
    assert verdict(found, user="alice", allowed={}, dry_run_refusal=None) == [
        'spec.template: user "alice" may not create Pods in namespace "team-a" (an inline template is admitted '
        "only for authors who could create its Pod themselves; use a BotClass instead)",
        'spec.template.spec.serviceAccountName: user "alice" may not run Pods as ServiceAccount "admin-sa" in '
        'namespace "team-a" (RBAC: create pods, the right that lets a user run a Pod as any ServiceAccount of its '
        "namespace)",
        'spec.template.spec.containers[0].envFrom[0].secretRef.name: user "alice" may not read Secret "db" in '
        'namespace "team-a" (RBAC: get secrets)',
    ]


def test_an_author_who_may_create_pods_but_not_read_the_secret_is_refused_at_the_secret() -> None:
    found = review(template=INLINE)
    assert verdict(found, user="carol", allowed={PODS: True}, dry_run_refusal=None) == [
        'spec.template.spec.containers[0].envFrom[0].secretRef.name: user "carol" may not read Secret "db" in '
        'namespace "team-a" (RBAC: get secrets)'
    ]


def test_the_dry_run_speaks_only_when_everything_else_passed_and_names_the_template() -> None:
    found = review(template=INLINE)
    allowed = dict.fromkeys(found.checks, True)
    assert verdict(found, user="bob", allowed=allowed, dry_run_refusal="quota exceeded") == [
        "spec.template: the bot Pod would be refused: quota exceeded"
    ]
    assert len(verdict(found, user="alice", allowed={}, dry_run_refusal="quota exceeded")) == 3
    by_class = review(classes=[klass()])
    assert verdict(by_class, user="bob", allowed={}, dry_run_refusal="no such image") == [
        'BotClass "std" spec.template: the bot Pod would be refused: no such image'
    ]


def test_a_user_name_is_quoted_as_json() -> None:
    found = review(template=INLINE)
    [first, *_] = verdict(found, user='eve"\n', allowed={}, dry_run_refusal=None)
    assert first.startswith('spec.template: user "eve\\"\\n" may not')


def test_a_template_the_pod_builder_cannot_use_is_refused_without_python_words() -> None:
    found = review(template={"spec": {"containers": [{"name": "bot", "image": "x", "ports": "x"}]}})
    assert found.refusals == (
        "spec.template: the bot Pod cannot be built from this template: a field has the wrong type",
    )
