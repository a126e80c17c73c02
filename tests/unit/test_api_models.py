"""Spec parsing (every problem reported, each naming its field), states, status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest

from scheduledbot.api.errors import FieldError, SpecError
from scheduledbot.api.models import (
    DEFAULT_BOT_NAME,
    IN_MEETING_STATES,
    RESCHEDULABLE_STATES,
    TERMINAL_STATES,
    BotState,
    Condition,
    ConditionStatus,
    JoinedBy,
    ScheduledBotSpec,
    ScheduledBotStatus,
    ValidSpec,
    parse_spec,
)
from scheduledbot.api.platforms import Platform

ZOOM = {
    "meetingUrl": "https://zoom.us/j/123456789",
    "botName": "My scheduled bot",
    "joinAt": "2025-06-16T16:24:00+0000",
}


def test_a_zoom_request_with_an_offset_without_colon_parses() -> None:
    assert parse_spec(ZOOM, extra_hosts=frozenset()) == ValidSpec(
        meeting_url="https://zoom.us/j/123456789",
        platform=Platform.ZOOM,
        bot_name="My scheduled bot",
        join_at=datetime(2025, 6, 16, 16, 24, tzinfo=UTC),
        staging_lead_seconds=None,
        join_deadline_seconds=None,
        max_duration_seconds=None,
        bot_config=None,
        template=None,
    )


def test_a_spec_with_every_field_parses() -> None:
    spec = {
        **ZOOM,
        "stagingLeadSeconds": 300,
        "joinDeadlineSeconds": 60,
        "maxDurationSeconds": 3600,
        "botConfig": {"recording": {"video": True}},
        "template": {"spec": {"containers": [{"name": "bot", "image": "bot:1"}]}},
    }
    valid = parse_spec(spec, extra_hosts=frozenset())
    assert (valid.staging_lead_seconds, valid.join_deadline_seconds, valid.max_duration_seconds) == (300, 60, 3600)
    assert valid.bot_config == {"recording": {"video": True}}
    assert valid.template == {"spec": {"containers": [{"name": "bot", "image": "bot:1"}]}}


def test_the_bot_name_has_a_default() -> None:
    valid = parse_spec({"meetingUrl": ZOOM["meetingUrl"], "joinAt": ZOOM["joinAt"]}, extra_hosts=frozenset())
    assert valid.bot_name == DEFAULT_BOT_NAME == "Meeting Bot"


def test_snake_case_keys_are_accepted_too() -> None:
    valid = parse_spec({"meeting_url": ZOOM["meetingUrl"], "join_at": ZOOM["joinAt"]}, extra_hosts=frozenset())
    assert valid.platform is Platform.ZOOM


def test_an_admitted_local_host_parses_as_local() -> None:
    spec = {**ZOOM, "meetingUrl": "http://127.0.0.5:8181/m/1"}
    assert parse_spec(spec, extra_hosts=frozenset({"127.0.0.5:8181"})).platform is Platform.LOCAL


def test_unknown_keys_are_ignored() -> None:
    assert parse_spec({**ZOOM, "colour": "blue"}, extra_hosts=frozenset()).bot_name == "My scheduled bot"


def _errors(spec: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec, extra_hosts=frozenset())
    return list(caught.value.messages)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(None, ["spec: is required"], id="a missing spec"),
        pytest.param(["a"], ["spec: must be an object"], id="a spec that is not an object"),
        pytest.param(
            {},
            ["spec.meetingUrl: is required", "spec.joinAt: is required"],
            id="an empty spec names both required fields",
        ),
        pytest.param(
            {**ZOOM, "joinAt": "2025-06-16T16:24:00"},
            [
                'spec.joinAt: "2025-06-16T16:24:00" has no UTC offset; expected ISO 8601 with an offset, '
                "e.g. 2025-06-16T16:24:00Z or 2025-06-16T16:24:00+0000"
            ],
            id="a joinAt without an offset",
        ),
        pytest.param(
            {**ZOOM, "meetingUrl": "https://example.com/x"},
            [
                'spec.meetingUrl: "https://example.com/x" is not a supported meeting URL; supported: '
                "Zoom (https://zoom.us/j/...), Google Meet (https://meet.google.com/...), "
                "Microsoft Teams (https://teams.microsoft.com/...), Webex (https://*.webex.com/...)"
            ],
            id="an unsupported meeting URL",
        ),
        pytest.param(
            {**ZOOM, "stagingLeadSeconds": 86401},
            ["spec.stagingLeadSeconds: 86401 is invalid: input should be less than or equal to 86400"],
            id="a staging lead over a day",
        ),
        pytest.param(
            {**ZOOM, "stagingLeadSeconds": -1},
            ["spec.stagingLeadSeconds: -1 is invalid: input should be greater than or equal to 0"],
            id="a negative staging lead",
        ),
        pytest.param(
            {**ZOOM, "joinDeadlineSeconds": 0},
            ["spec.joinDeadlineSeconds: 0 is invalid: input should be greater than or equal to 1"],
            id="a join deadline of zero",
        ),
        pytest.param(
            {**ZOOM, "maxDurationSeconds": 59},
            ["spec.maxDurationSeconds: 59 is invalid: input should be greater than or equal to 60"],
            id="a max duration under a minute",
        ),
        pytest.param(
            {**ZOOM, "stagingLeadSeconds": "300"},
            ['spec.stagingLeadSeconds: "300" is invalid: input should be a valid integer'],
            id="a number written as a string",
        ),
        pytest.param(
            {**ZOOM, "stagingLeadSeconds": True},
            ["spec.stagingLeadSeconds: True is invalid: input should be a valid integer"],
            id="a boolean where a number belongs",
        ),
        pytest.param(
            {**ZOOM, "botConfig": "video=on"},
            ['spec.botConfig: "video=on" is invalid: input should be a valid dictionary'],
            id="a bot config that is not an object",
        ),
        pytest.param(
            {**ZOOM, "joinAt": 1750091040},
            ["spec.joinAt: 1750091040 is invalid: input should be a valid string"],
            id="a joinAt given as a Unix time",
        ),
    ],
)
def test_parse_spec_errors(spec: Any, expected: list[str]) -> None:
    assert _errors(spec) == expected


def test_every_problem_is_reported_at_once_in_field_order() -> None:
    spec = {"maxDurationSeconds": 1, "joinAt": "soon", "botName": "", "meetingUrl": "https://example.com/x"}
    paths = [message.split(":", 1)[0] for message in _errors(spec)]
    assert paths == ["spec.meetingUrl", "spec.botName", "spec.joinAt", "spec.maxDurationSeconds"]


def test_a_bot_name_over_100_characters_is_refused_and_cut_in_the_message() -> None:
    [message] = _errors({**ZOOM, "botName": "b" * 101})
    assert message.startswith('spec.botName: "bbbb')
    assert message.endswith("is invalid: string should have at most 100 characters")
    assert len(message) < 200


def test_a_meeting_url_over_2048_characters_is_refused_before_detection() -> None:
    [message] = _errors({**ZOOM, "meetingUrl": "https://zoom.us/j/" + "1" * 2040})
    assert message.endswith("string should have at most 2048 characters")


def test_spec_errors_carry_paths_apart_from_the_text() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({**ZOOM, "joinAt": "soon"}, extra_hosts=frozenset())
    [error] = caught.value.errors
    assert isinstance(error, FieldError)
    assert error.path == "spec.joinAt"
    assert str(caught.value) == str(error)


def test_a_spec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_spec({}, extra_hosts=frozenset())


def test_the_wire_model_reads_camel_case_and_is_frozen() -> None:
    spec = ScheduledBotSpec.model_validate(ZOOM)
    assert spec.join_at == "2025-06-16T16:24:00+0000"
    with pytest.raises(pydantic.ValidationError):
        spec.bot_name = "other"


@pytest.mark.parametrize(
    ("state", "terminal", "in_meeting", "reschedulable"),
    [
        pytest.param(BotState.SCHEDULED, False, False, True, id="a scheduled bot can be rescheduled"),
        pytest.param(BotState.STAGED, False, False, True, id="a staged bot can be rescheduled"),
        pytest.param(BotState.JOINING, False, True, False, id="a joining bot is in the meeting"),
        pytest.param(BotState.WAITING_ROOM, False, True, False, id="a bot in the waiting room is in the meeting"),
        pytest.param(BotState.JOINED, False, True, False, id="a joined bot is in the meeting"),
        pytest.param(BotState.RECORDING, False, True, False, id="a recording bot is in the meeting"),
        pytest.param(BotState.LEAVING, False, True, False, id="a leaving bot is still in the meeting"),
        pytest.param(BotState.ENDED, True, False, False, id="an ended bot is final"),
        pytest.param(BotState.FAILED, True, False, False, id="a failed bot is final"),
    ],
)
def test_bot_state_groups(state: BotState, terminal: bool, in_meeting: bool, reschedulable: bool) -> None:
    assert (state.is_terminal, state.in_meeting, state.allows_reschedule) == (terminal, in_meeting, reschedulable)


def test_the_state_groups_cover_every_state_once() -> None:
    groups = (RESCHEDULABLE_STATES, IN_MEETING_STATES, TERMINAL_STATES)
    assert sorted(state for group in groups for state in group) == sorted(BotState)


def test_state_values_are_the_documented_ones() -> None:
    assert [state.value for state in BotState] == [
        "scheduled",
        "staged",
        "joining",
        "waiting_room",
        "joined",
        "recording",
        "leaving",
        "ended",
        "failed",
    ]
    assert [by.value for by in JoinedBy] == ["signal", "deadline"]


def test_a_status_reads_from_the_apiserver_and_writes_back_unchanged() -> None:
    body = {
        "state": "joined",
        "reason": "Joined",
        "message": "in the meeting",
        "platform": "zoom",
        "joinAt": "2025-06-16T16:24:00Z",
        "stageAt": "2025-06-16T16:19:00Z",
        "podName": "demo-bot",
        "scheduledAt": "2025-06-16T15:00:00Z",
        "stagedAt": "2025-06-16T16:19:00.120Z",
        "joinSignaledAt": "2025-06-16T16:24:00.004Z",
        "joinedAt": "2025-06-16T16:24:01.500Z",
        "joinLatenessMs": 4,
        "joinedBy": "signal",
        "observedGeneration": 2,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "observedGeneration": 2,
                "lastTransitionTime": "2025-06-16T15:00:00Z",
                "reason": "Joined",
                "message": "in the meeting",
            }
        ],
    }
    status = ScheduledBotStatus.model_validate(body)
    assert status.state is BotState.JOINED
    assert status.joined_by is JoinedBy.SIGNAL
    assert status.conditions is not None and status.conditions[0].status is ConditionStatus.TRUE
    assert status.model_dump(by_alias=True, exclude_none=True, mode="json") == body


def test_an_empty_status_is_valid() -> None:
    assert ScheduledBotStatus.model_validate({}).state is None


def test_conditions_take_python_names_and_plain_strings() -> None:
    condition = Condition.model_validate(
        {
            "type": "Stalled",
            "status": "False",
            "last_transition_time": "2025-06-16T15:00:00Z",
            "reason": "Scheduled",
            "message": "",
        }
    )
    assert condition.status is ConditionStatus.FALSE


def test_a_condition_reason_must_be_camel_case() -> None:
    with pytest.raises(pydantic.ValidationError):
        Condition(
            type="Ready",
            status=ConditionStatus.TRUE,
            last_transition_time="2025-06-16T15:00:00Z",
            reason="not ok",
            message="",
        )
