"""The committed CRDs are the models' CRDs, and ones the apiserver accepts:
structural, bounded, with the CEL rules and columns the design asks for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from scheduledbot.api.botclass import BotClassSpec
from scheduledbot.api.crd import (
    BOT_CLASS,
    BOT_SCHEDULE,
    KINDS,
    ROOT_RULES,
    CrdKind,
    build_crd,
    render_crd,
    structural_schema,
)
from scheduledbot.api.joinat import JOIN_AT_PATTERN
from scheduledbot.api.limits import UNSAFE_CHARACTER_CLASS_RE2
from scheduledbot.api.models import RESCHEDULABLE_STATES, ScheduledBotSpec, ScheduledBotStatus
from scheduledbot.api.schedule import BotScheduleSpec, BotScheduleStatus, BotTemplateSpec

CRDS = Path(__file__).resolve().parents[2] / "crds"
CRD_FILE = CRDS / "meetingbots.dev_scheduledbots.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return build_crd()


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    root: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.names.kind)
def test_crd_matches_models(kind: CrdKind) -> None:
    path = CRDS / kind.file_name
    assert path.exists() and path.read_text() == render_crd(kind), (
        f"{path.name} is out of date with {kind.spec.__module__}: run `make crds` and commit the result"
    )


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.names.kind)
def test_the_rendered_yaml_is_the_built_crd(kind: CrdKind) -> None:
    assert yaml.safe_load(render_crd(kind)) == build_crd(kind)


def test_the_crd_names_the_resource_as_the_design_does(crd: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "scheduledbots.meetingbots.dev"
    spec = crd["spec"]
    assert spec["group"] == "meetingbots.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "ScheduledBot",
        "listKind": "ScheduledBotList",
        "plural": "scheduledbots",
        "singular": "scheduledbot",
        "shortNames": ["sbot"],
        "categories": ["meetingbots"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_the_printer_columns(crd: dict[str, Any]) -> None:
    columns = {
        column["name"]: (column["type"], column["jsonPath"], column.get("priority", 0))
        for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert columns == {
        "State": ("string", ".status.state", 0),
        # A future `date` column would print <invalid>.
        "Join At": ("string", ".status.joinAt", 0),
        "Platform": ("string", ".status.platform", 0),
        "Pod": ("string", ".status.podName", 0),
        "Lateness(ms)": ("integer", ".status.joinLatenessMs", 0),
        "Age": ("date", ".metadata.creationTimestamp", 0),
        "Reason": ("string", ".status.reason", 1),
    }


def _nodes(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if "items" in node:
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}.*")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.names.kind)
def test_the_schema_is_structural_and_bounded(kind: CrdKind) -> None:
    schema = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _nodes(schema, ""):
        assert not {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title"} & node.keys(), path
        assert "type" in node, f"{path} has no type"
        # apiVersion and kind are the apiserver's own, and no rule reads them.
        if node["type"] == "string" and path not in (".apiVersion", ".kind"):
            assert "maxLength" in node, f"{path} is an unbounded string"
        if node["type"] == "array":
            assert "maxItems" in node, f"{path} is an unbounded list"
        if "default" in node:
            assert node["default"] is not None, path


def test_every_spec_and_status_field_is_described(schema: dict[str, Any]) -> None:
    for part in ("spec", "status"):
        for path, node in _nodes(schema["properties"][part], part):
            assert node.get("description"), f"{path} has no description for kubectl explain"


def test_the_schema_lists_every_model_field(schema: dict[str, Any]) -> None:
    for part, model in (("spec", ScheduledBotSpec), ("status", ScheduledBotStatus)):
        aliases = {field.alias for field in model.model_fields.values()}
        assert set(schema["properties"][part]["properties"]) == aliases


def test_only_the_pass_through_objects_keep_unknown_fields(schema: dict[str, Any]) -> None:
    keeping = [path for path, node in _nodes(schema, "") if node.get("x-kubernetes-preserve-unknown-fields")]
    assert keeping == [
        ".spec.botConfig",
        ".spec.template",
        ".spec.template.metadata",
        ".spec.template.spec",
        ".spec.template.spec.containers[]",
        ".spec.template.spec.initContainers[]",
    ]
    assert all(node["type"] == "object" for path, node in _nodes(schema, "") if path in keeping)


def test_a_template_is_shaped_like_one_for_the_apiserver(schema: dict[str, Any]) -> None:
    template = schema["properties"]["spec"]["properties"]["template"]
    assert template["required"] == ["spec"]
    pod = template["properties"]["spec"]
    assert pod["required"] == ["containers"]
    assert pod["properties"]["containers"]["minItems"] == 1
    assert pod["properties"]["containers"]["items"]["required"] == ["name"]


def test_bot_config_is_capped_where_the_apiserver_can_see(schema: dict[str, Any]) -> None:
    # CEL cannot see inside an object that keeps unknown fields: only the key count is the schema's.
    assert schema["properties"]["spec"]["properties"]["botConfig"]["maxProperties"] == 64


@pytest.mark.parametrize("field", ["botName", "meetingUrl"])
def test_names_and_urls_refuse_control_and_bidi_characters_in_cel(schema: dict[str, Any], field: str) -> None:
    rules = schema["properties"]["spec"]["properties"][field]["x-kubernetes-validations"]
    assert any(UNSAFE_CHARACTER_CLASS_RE2 in rule["rule"] and "control characters" in rule["message"] for rule in rules)


def test_join_at_is_checked_by_cel_not_by_date_time_format(schema: dict[str, Any]) -> None:
    join_at = schema["properties"]["spec"]["properties"]["joinAt"]
    assert "format" not in join_at and "pattern" not in join_at  # date-time rejects +0000
    rules = join_at["x-kubernetes-validations"]
    assert rules[0]["rule"] == f"self.matches('{JOIN_AT_PATTERN}')"
    assert all("messageExpression" in rule and "message" in rule for rule in rules)


def test_meeting_url_is_checked_as_an_http_url(schema: dict[str, Any]) -> None:
    rule = schema["properties"]["spec"]["properties"]["meetingUrl"]["x-kubernetes-validations"][0]
    assert "isURL(self)" in rule["rule"] and "getScheme()" in rule["rule"]
    assert "Zoom" in rule["message"]


def test_spec_requires_the_meeting_and_the_time(schema: dict[str, Any]) -> None:
    assert schema["required"] == ["spec"]
    assert schema["properties"]["spec"]["required"] == ["meetingUrl", "joinAt"]
    assert schema["properties"]["spec"]["properties"]["botName"]["default"] == "Meeting Bot"


def test_the_meeting_fields_freeze_once_the_bot_is_joining(schema: dict[str, Any]) -> None:
    frozen = {rule["fieldPath"]: rule for rule in schema["x-kubernetes-validations"] if "fieldPath" in rule}
    assert set(frozen) == {".spec.joinAt", ".spec.meetingUrl"}
    for field_path, rule in frozen.items():
        field = field_path.removeprefix(".spec.")
        # A status write or a metadata edit leaves the field as it was, so it passes.
        assert rule["rule"].startswith(f"self.spec.{field} == oldSelf.spec.{field} || ")
        for state in RESCHEDULABLE_STATES:
            assert f"'{state}'" in rule["rule"]
        assert "oldSelf.status.state" in rule["messageExpression"]
        assert rule["reason"] == "FieldValueForbidden"


def test_the_root_rules_are_the_ones_published(schema: dict[str, Any]) -> None:
    assert schema["x-kubernetes-validations"] == [dict(rule) for rule in ROOT_RULES]


def test_conditions_are_a_map_keyed_by_type(schema: dict[str, Any]) -> None:
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]


class _Unbounded(BaseModel):
    name: str = Field(description="no maxLength")


class _Undescribed(BaseModel):
    name: str = Field(max_length=5)


class _Union(BaseModel):
    value: int | str = Field(description="either")


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        pytest.param(_Unbounded, "x.name: a string needs a maximum length", id="a string without a maximum length"),
        pytest.param(_Undescribed, "x.name: every field needs a description", id="a field without a description"),
        pytest.param(_Union, "x.value: a union of several types", id="a union of types"),
    ],
)
def test_the_generator_refuses_what_the_apiserver_would(model: type[BaseModel], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        structural_schema(model, path="x")


# --- BotSchedule -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schedule_crd() -> dict[str, Any]:
    return build_crd(BOT_SCHEDULE)


@pytest.fixture(scope="module")
def schedule_schema(schedule_crd: dict[str, Any]) -> dict[str, Any]:
    root: dict[str, Any] = schedule_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def test_the_botschedule_crd_names_the_resource(schedule_crd: dict[str, Any]) -> None:
    spec = schedule_crd["spec"]
    assert schedule_crd["metadata"]["name"] == "botschedules.meetingbots.dev"
    assert (spec["group"], spec["scope"]) == ("meetingbots.dev", "Namespaced")
    assert spec["names"] == {
        "kind": "BotSchedule",
        "listKind": "BotScheduleList",
        "plural": "botschedules",
        "singular": "botschedule",
        "shortNames": ["bsched"],
        "categories": ["meetingbots"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["subresources"]) == ("v1alpha1", {"status": {}})


def test_the_botschedule_printer_columns(schedule_crd: dict[str, Any]) -> None:
    columns = {
        column["name"]: (column["type"], column["jsonPath"])
        for column in schedule_crd["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert columns == {
        "Source": ("string", ".status.source"),
        "Time Zone": ("string", ".spec.timeZone"),
        "Next": ("string", ".status.next[0].time"),
        "Active": ("integer", ".status.activeCount"),
        "Last": ("date", ".status.lastScheduleTime"),
        "Suspended": ("boolean", ".spec.suspend"),
        "Age": ("date", ".metadata.creationTimestamp"),
    }


def test_the_botschedule_schema_is_structural_bounded_and_described(schedule_schema: dict[str, Any]) -> None:
    for path, node in _nodes(schedule_schema, ""):
        assert not {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title"} & node.keys(), path
        assert "type" in node, path
        if node["type"] == "string" and path not in (".apiVersion", ".kind"):
            assert "maxLength" in node, f"{path} is an unbounded string"
        if node["type"] == "array":
            assert "maxItems" in node, f"{path} is an unbounded list"
        if node["type"] == "object" and isinstance(node.get("additionalProperties"), dict):
            assert "maxProperties" in node, f"{path} is an unbounded map"
        if path.startswith((".spec", ".status")) and not path.endswith(("[]", ".*")):
            assert node.get("description"), f"{path} has no description for kubectl explain"


def test_the_template_is_a_scheduled_bot_spec_without_join_at(schedule_schema: dict[str, Any]) -> None:
    template = schedule_schema["properties"]["spec"]["properties"]["botTemplate"]["properties"]["spec"]
    bot = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(template["properties"]) == set(bot["properties"]) - {"joinAt"}
    assert "required" not in template  # meetingUrl: required for cron and rrule only, by a rule on spec
    # The same limits and rules as ScheduledBot's own fields, the description aside.
    for name, node in template["properties"].items():
        assert {k: v for k, v in node.items() if k != "description"} == {
            k: v for k, v in bot["properties"][name].items() if k != "description"
        }, name
    assert {field.alias for field in BotTemplateSpec.model_fields.values()} == set(template["properties"])


def test_the_botschedule_schema_lists_every_model_field(schedule_schema: dict[str, Any]) -> None:
    for part, model in (("spec", BotScheduleSpec), ("status", BotScheduleStatus)):
        aliases = {field.alias for field in model.model_fields.values()}
        assert set(schedule_schema["properties"][part]["properties"]) == aliases


def test_the_botschedule_rules_that_need_no_clock_are_cel(schedule_schema: dict[str, Any]) -> None:
    spec = schedule_schema["properties"]["spec"]
    rules = [rule["rule"] for rule in spec["x-kubernetes-validations"]]
    assert any("has(self.cron)" in rule and "== 1" in rule for rule in rules)  # exactly one source
    assert "has(self.ical) || has(self.botTemplate.spec.meetingUrl)" in rules
    assert spec["properties"]["timeZone"]["x-kubernetes-validations"][0]["rule"].startswith("self.matches(")
    assert spec["properties"]["cron"]["x-kubernetes-validations"][0]["rule"].startswith("self.matches(")
    assert spec["properties"]["horizonSeconds"]["maximum"] == 28 * 86400
    assert spec["required"] == ["timeZone", "botTemplate"]
    [name_rule] = schedule_schema["x-kubernetes-validations"]
    assert name_rule["rule"] == "self.metadata.name.size() <= 52"


# --- BotClass ------------------------------------------------------------------------------


def test_the_bot_class_is_cluster_scoped_in_the_same_group_without_status() -> None:
    crd = build_crd(BOT_CLASS)
    assert crd["metadata"]["name"] == "botclasses.meetingbots.dev"
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["kind"] == "BotClass"
    assert crd["spec"]["names"]["categories"] == ["meetingbots"]
    [version] = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    assert "subresources" not in version
    root = version["schema"]["openAPIV3Schema"]
    assert set(root["properties"]) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(root["properties"]["spec"]["properties"]) == {f.alias for f in BotClassSpec.model_fields.values()}


def test_the_bot_class_columns_show_the_default_and_what_it_allows() -> None:
    columns = {
        c["name"]: (c["jsonPath"], c.get("priority", 0))
        for c in build_crd(BOT_CLASS)["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert columns == {
        "Default": (r".metadata.annotations.meetingbots\.dev/is-default-class", 0),
        "Inline Templates": (".spec.allowInlineTemplate", 0),
        "Platforms": (".spec.allowedPlatforms", 0),
        "Age": (".metadata.creationTimestamp", 0),
        "Image": (".spec.template.spec.containers[0].image", 1),
    }


def test_every_bot_class_field_is_described() -> None:
    spec = build_crd(BOT_CLASS)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, node in _nodes(spec, "spec"):
        assert node.get("description"), f"{path} has no description for kubectl explain"
