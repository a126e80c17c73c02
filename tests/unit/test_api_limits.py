"""Input limits: names without control or bidi characters, free-form objects bounded in size and depth,
templates shaped like templates; and BotClass parsing. Each problem names its field."""

from __future__ import annotations

import re
from typing import Any

import pytest

from scheduledbot.api.botclass import DEFAULT_CLASS_ANNOTATION, parse_bot_class
from scheduledbot.api.errors import SpecError
from scheduledbot.api.limits import (
    MAX_BOT_CONFIG_BYTES,
    UNSAFE_CHARACTER_CLASS_RE2,
    UNSAFE_CHARACTERS,
    json_size_errors,
    unsafe_character,
)
from scheduledbot.api.models import parse_spec
from scheduledbot.api.platforms import Platform

SPEC = {"meetingUrl": "https://zoom.us/j/123456789", "joinAt": "2030-06-16T16:24:00Z"}


def problems(**fields: Any) -> list[str]:
    try:
        parse_spec({**SPEC, **fields}, extra_hosts=frozenset())
    except SpecError as error:
        return list(error.messages)
    return []


def nested(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth - 1):
        node["a"] = {}
        node = node["a"]
    return root


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        pytest.param("Note\x00taker", "U+0000", id="NUL"),
        pytest.param("Note\ntaker", "U+000A", id="a newline, which would forge a log line"),
        pytest.param("\x1b[31mred", "U+001B", id="ESC, which drives terminals"),
        pytest.param("Note\x7f", "U+007F", id="DEL"),
        pytest.param("Note\x85", "U+0085", id="a C1 control"),
        pytest.param("Note\u202etaker", "U+202E", id="a right-to-left override"),
        pytest.param("Note\u2066taker", "U+2066", id="a bidi isolate"),
        pytest.param("Note\u200ftaker", "U+200F", id="a right-to-left mark"),
        pytest.param("Note\u2028taker", "U+2028", id="a line separator"),
    ],
)
def test_a_bot_name_with_an_unsafe_character_is_refused_naming_it(name: str, shown: str) -> None:
    [problem] = problems(botName=name)
    assert problem.startswith("spec.botName: ")
    assert "control characters" in problem and f"(found {shown})" in problem


@pytest.mark.parametrize("name", ["Notetaker", "Ünïcødé Bot", "会议机器人", "Bot (EU) #2", "مسجل"])
def test_ordinary_names_in_any_script_pass(name: str) -> None:
    assert problems(botName=name) == []


def test_a_meeting_url_with_a_control_character_in_its_query_is_refused() -> None:
    [problem] = problems(meetingUrl="https://zoom.us/j/123456789?pwd=a\x00b")
    assert problem.startswith("spec.meetingUrl: ") and "(found U+0000)" in problem


def re2_class_codes(text: str) -> set[int]:
    """The code points of a character class body written with \\xHH and \\x{HHHH} escapes and ranges."""
    tokens = re.findall(r"\\x(?:\{([0-9A-Fa-f]+)\}|([0-9A-Fa-f]{2}))(-?)", text)
    codes: set[int] = set()
    pending: int | None = None
    for braced, short, dash in tokens:
        code = int(braced or short, 16)
        if pending is not None:
            codes.update(range(pending, code + 1))
            pending = None
        elif dash:
            pending = code
        else:
            codes.add(code)
    return codes


def test_the_python_and_re2_classes_list_the_same_characters() -> None:
    # RE2 (the API server) reads \\x{...}; Python's re does not: the two are written apart.
    python = {code for code in range(0x3000) if UNSAFE_CHARACTERS.match(chr(code))}
    assert re2_class_codes(UNSAFE_CHARACTER_CLASS_RE2) == python
    assert unsafe_character("plain") is None


def test_bot_config_over_its_size_is_refused_with_its_size() -> None:
    [problem] = problems(botConfig={"blob": "x" * MAX_BOT_CONFIG_BYTES})
    assert problem == f"spec.botConfig: is {MAX_BOT_CONFIG_BYTES + 11} bytes as JSON; at most 32768 bytes are allowed"


def test_a_hostile_deep_bot_config_costs_a_loop_not_a_crash() -> None:
    assert problems(botConfig=nested(100_000)) == ["spec.botConfig: is nested more than 16 levels deep"]
    assert problems(botConfig=nested(16)) == []


def test_bot_config_keys_are_capped_as_in_the_schema() -> None:
    [problem] = problems(botConfig={str(i): i for i in range(65)})
    assert problem.startswith("spec.botConfig: an object of 65 keys is invalid")


def test_a_size_problem_and_a_field_problem_are_reported_together() -> None:
    assert problems(botConfig=nested(20), botName="a\nb", template=nested(40)) == [
        'spec.botName: "a\\nb" is invalid: must not contain control characters, line separators or '
        "bidirectional-override characters (found U+000A)",
        "spec.botConfig: is nested more than 16 levels deep",
        "spec.template: is nested more than 32 levels deep",
    ]


def test_json_size_counts_utf8_bytes_of_compact_json() -> None:
    assert json_size_errors({"é": 1}, path="x", max_bytes=8, max_depth=1) == []  # {"é":1} is 8 bytes
    [error] = json_size_errors({"é": 12}, path="x", max_bytes=8, max_depth=1)
    assert str(error) == "x: is 9 bytes as JSON; at most 8 bytes are allowed"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param({"spec": "x"}, 'spec.template.spec: "x" is invalid', id="spec is a string"),
        pytest.param({"spec": {"containers": "x"}}, 'spec.template.spec.containers: "x" is invalid', id="containers"),
        pytest.param({"spec": {"containers": []}}, "spec.template.spec.containers: a list of 0 items", id="empty"),
        pytest.param({"spec": {"containers": [{"image": "x"}]}}, "spec.template.spec.containers[0].name: is required"),
        pytest.param({"metadata": {}}, "spec.template.spec: is required", id="no spec"),
        pytest.param({"spec": {"containers": [{"name": 3}]}}, "spec.template.spec.containers[0].name: 3 is invalid"),
    ],
)
def test_a_template_not_shaped_like_one_is_refused_at_its_field(template: dict[str, Any], expected: str) -> None:
    [problem] = problems(template=template)
    assert problem.startswith(expected), problem


def test_a_template_keeps_every_field_it_was_written_with() -> None:
    template = {
        "metadata": {"labels": {"team": "a"}},
        "spec": {
            "containers": [{"name": "bot", "image": "bot:1", "env": [{"name": "A", "value": "1"}]}],
            "initContainers": [{"name": "init", "image": "init:1"}],
            "nodeSelector": {"pool": "bots"},
        },
    }
    assert parse_spec({**SPEC, "template": template}, extra_hosts=frozenset()).template == template


def test_a_bot_names_its_class() -> None:
    assert parse_spec({**SPEC, "botClassName": "recorders"}, extra_hosts=frozenset()).bot_class_name == "recorders"
    assert parse_spec(SPEC, extra_hosts=frozenset()).bot_class_name is None
    [problem] = problems(botClassName="Not_A_Name")
    assert problem.startswith("spec.botClassName: ")


# --- BotClass -----------------------------------------------------------------------------------


def bot_class(spec: Any = None, *, default: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "recorders"}
    if default is not None:
        meta["annotations"] = {DEFAULT_CLASS_ANNOTATION: default}
    body: dict[str, Any] = {"apiVersion": "meetingbots.dev/v1alpha1", "kind": "BotClass", "metadata": meta}
    if spec is not None:
        body["spec"] = spec
    return body


def test_an_empty_class_allows_every_platform_no_inline_template_and_the_largest_config() -> None:
    valid = parse_bot_class(bot_class())
    assert (valid.name, valid.is_default, valid.template, valid.allowed_platforms) == ("recorders", False, None, None)
    assert valid.allow_inline_template is False
    assert valid.max_bot_config_bytes == MAX_BOT_CONFIG_BYTES
    assert (valid.max_duration_seconds, valid.max_staging_lead_seconds) == (None, None)


def test_a_full_class_parses() -> None:
    template = {"spec": {"containers": [{"name": "bot", "image": "bot:1"}], "serviceAccountName": "recorder"}}
    valid = parse_bot_class(
        bot_class(
            {
                "template": template,
                "allowedPlatforms": ["zoom", "google_meet"],
                "allowInlineTemplate": True,
                "limits": {"maxBotConfigBytes": 1024, "maxDurationSeconds": 3600, "maxStagingLeadSeconds": 600},
            },
            default="true",
        )
    )
    assert valid.is_default and valid.allow_inline_template
    assert valid.template == template
    assert valid.allowed_platforms == frozenset({Platform.ZOOM, Platform.GOOGLE_MEET})
    assert (valid.max_bot_config_bytes, valid.max_duration_seconds, valid.max_staging_lead_seconds) == (1024, 3600, 600)


@pytest.mark.parametrize("value", ["True", "yes", "1", ""])
def test_only_the_exact_string_true_marks_the_default(value: str) -> None:
    assert parse_bot_class(bot_class(default=value)).is_default is False


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"allowedPlatforms": ["skype"]}, "spec.allowedPlatforms[0]"),
        ({"limits": {"maxBotConfigBytes": MAX_BOT_CONFIG_BYTES + 1}}, "spec.limits.maxBotConfigBytes"),
        ({"allowInlineTemplate": "yes"}, "spec.allowInlineTemplate"),
        ({"template": {"spec": {"containers": "x"}}}, "spec.template.spec.containers"),
        ({"template": nested(40)}, "spec.template"),
        ("x", "spec"),
    ],
)
def test_a_bad_class_names_its_field(spec: Any, field: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_bot_class(bot_class(spec))
    assert raised.value.errors[0].path == field
