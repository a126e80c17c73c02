"""The Argo CD health check (manifests/argocd/health.lua), run as Argo CD runs it.

Argo CD runs custom health checks in gopher-lua (Lua 5.1) with only the base and
table libraries, the object as the global `obj`, and reads `status` and `message`
from the table the script returns. Here the same script runs in Lua 5.1 (lupa)
with the same libraries, and string methods switched off, so a script that would
fail in Argo CD fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51
import pytest
import yaml

from scheduledbot.api.models import BotState

ARGOCD = Path(__file__).resolve().parents[2] / "manifests" / "argocd"
SCRIPT = (ARGOCD / "health.lua").read_text()
CM_KEY = "resource.customizations.health.meetingbots.dev_ScheduledBot"
SCHEDULE_SCRIPT = (ARGOCD / "botschedule_health.lua").read_text()
SCHEDULE_CM_KEY = "resource.customizations.health.meetingbots.dev_BotSchedule"

_SANDBOX = """
local script, obj = ...
getmetatable("").__index = nil
local env = {obj = obj, table = table}
for _, name in ipairs({"assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget",
                       "rawset", "select", "setmetatable", "getmetatable", "tonumber", "tostring",
                       "type", "unpack", "xpcall"}) do
  env[name] = _G[name]
end
local chunk = assert(loadstring(script, "health.lua"))
setfenv(chunk, env)
local hs = chunk()
return hs.status, hs.message
"""


def health(obj: dict[str, Any], script: str = SCRIPT) -> tuple[str, str]:
    lua = lupa.lua51.LuaRuntime()
    run = lua.execute(f"return function(...) {_SANDBOX} end")
    status, message = run(script, lua.table_from(obj, recursive=True))
    return str(status), str(message)


def bot(
    state: str | None = None,
    *,
    message: str | None = None,
    reason: str | None = None,
    generation: int = 1,
    observed: int | None = 1,
    ready: str = "True",
    stalled: str = "False",
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "meetingbots.dev/v1alpha1",
        "kind": "ScheduledBot",
        "metadata": {"name": "standup", "namespace": "team", "generation": generation},
        "spec": {"meetingUrl": "https://zoom.us/j/123456789", "joinAt": "2030-06-16T16:24:00+0000"},
    }
    if state is None:
        return obj
    status: dict[str, Any] = {
        "state": state,
        "conditions": [
            {
                "type": "Ready",
                "status": ready,
                "reason": reason or "Scheduled",
                "message": message or "",
                "lastTransitionTime": "2030-06-16T16:00:00Z",
                "observedGeneration": observed,
            },
            {
                "type": "Reconciling",
                "status": "False",
                "reason": reason or "Scheduled",
                "message": message or "",
                "lastTransitionTime": "2030-06-16T16:00:00Z",
                "observedGeneration": observed,
            },
            {
                "type": "Stalled",
                "status": stalled,
                "reason": reason or "Scheduled",
                "message": message or "",
                "lastTransitionTime": "2030-06-16T16:00:00Z",
                "observedGeneration": observed,
            },
        ],
    }
    if message is not None:
        status["message"] = message
    if reason is not None:
        status["reason"] = reason
    if observed is not None:
        status["observedGeneration"] = observed
    obj["status"] = status
    return obj


#: Every state, what Argo CD shows, and a message the operator writes in it.
EXPECTED: dict[BotState, tuple[str, str]] = {
    BotState.SCHEDULED: ("Healthy", "joins at 2030-06-16T16:24:00Z"),
    BotState.STAGED: ("Healthy", "bot Pod created, warming up"),
    BotState.JOINING: ("Progressing", "join signal sent 3 ms after joinAt"),
    BotState.WAITING_ROOM: ("Healthy", "waiting for the host to admit me"),
    BotState.JOINED: ("Healthy", "in the meeting"),
    BotState.RECORDING: ("Healthy", "recording"),
    BotState.LEAVING: ("Progressing", "asked to leave"),
    BotState.ENDED: ("Healthy", "the meeting ended"),
    BotState.FAILED: ("Degraded", "bot Pod standup-bot was not Ready by 2030-06-16T16:26:00Z"),
}


def test_every_state_of_the_api_has_a_decided_health() -> None:
    assert set(EXPECTED) == set(BotState)


@pytest.mark.parametrize("state", [s for s in BotState if s is not BotState.FAILED], ids=str)
def test_each_state_maps_to_its_health_with_the_operators_message(state: BotState) -> None:
    expected, message = EXPECTED[state]
    assert health(bot(state.value, message=message)) == (expected, f"{state.value}: {message}")


def test_a_failed_bot_is_degraded_with_its_reason_and_message() -> None:
    _, message = EXPECTED[BotState.FAILED]
    obj = bot("failed", message=message, reason="NotReadyInTime", ready="False", stalled="True")
    assert health(obj) == ("Degraded", f"failed (NotReadyInTime): {message}")


def test_a_bot_the_operator_has_not_accepted_yet_is_progressing() -> None:
    assert health(bot()) == ("Progressing", "waiting for the operator to accept the bot")
    assert health({**bot(), "status": {}}) == ("Progressing", "waiting for the operator to accept the bot")


@pytest.mark.parametrize("state", ["scheduled", "staged"])
def test_a_rescheduled_bot_is_progressing_until_the_operator_observed_the_new_spec(state: str) -> None:
    status, message = health(bot(state, message="joins at 2030-06-16T16:24:00Z", generation=2, observed=1))
    assert (status, message) == ("Progressing", "waiting for the operator to act on the new spec (generation 2)")
    assert health(bot(state, generation=1, observed=None))[0] == "Progressing"
    assert health(bot(state, message="joins at 2030-06-16T16:24:00Z", generation=2, observed=2))[0] == "Healthy"


@pytest.mark.parametrize("state", ["joined", "ended"])
def test_a_spec_edit_after_the_join_does_not_hold_a_sync(state: str) -> None:
    # The operator acts on no spec change once the bot joined, so it never observes it.
    assert health(bot(state, message="x", generation=3, observed=1))[0] == "Healthy"


def test_a_state_this_check_does_not_know_falls_back_on_the_conditions() -> None:
    assert health(bot("paused", message="m"))[0] == "Healthy"
    assert health(bot("paused", message="m", ready="False", stalled="True"))[0] == "Degraded"
    assert health(bot("paused", message="m", ready="False")) == ("Progressing", "paused: m")


def test_the_argocd_cm_patch_embeds_exactly_health_lua() -> None:
    patch = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert (patch["kind"], patch["metadata"]["name"], patch["metadata"]["namespace"]) == (
        "ConfigMap",
        "argocd-cm",
        "argocd",
    )
    assert patch["data"] == {CM_KEY: SCRIPT, SCHEDULE_CM_KEY: SCHEDULE_SCRIPT}, (
        "manifests/argocd/argocd-cm.yaml must embed manifests/argocd/health.lua and botschedule_health.lua "
        "verbatim; paste each, indented by 4 spaces, under its key"
    )


# --- BotSchedule ---------------------------------------------------------------------------------


def schedule(
    ready: str | None = "True",
    *,
    stalled: str = "False",
    reason: str = "Scheduled",
    message: str = "bots are created ahead of each occurrence",
    generation: int = 1,
    observed: int | None = 1,
    next_time: str | None = "2030-01-07T08:00:00Z",
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "meetingbots.dev/v1alpha1",
        "kind": "BotSchedule",
        "metadata": {"name": "weekly-sync", "namespace": "team", "generation": generation},
        "spec": {"timeZone": "Europe/Berlin", "cron": "0 9 * * 1"},
    }
    if ready is None:
        return obj
    conditions = [
        {"type": kind, "status": value, "reason": reason, "message": message}
        for kind, value in (("Ready", ready), ("Reconciling", "False"), ("Stalled", stalled))
    ]
    obj["status"] = {"conditions": conditions, "observedGeneration": observed}
    if next_time is not None:
        obj["status"]["next"] = [{"time": next_time, "name": "weekly-sync-1893916800"}]
    return obj


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(
            schedule(),
            ("Healthy", "bots are created ahead of each occurrence; next: 2030-01-07T08:00:00Z"),
            id="planned",
        ),
        pytest.param(
            schedule(reason="Suspended", message="suspended", next_time=None),
            ("Healthy", "suspended"),
            id="suspended is Healthy: Suspended would hold every sync",
        ),
        pytest.param(
            schedule("False", stalled="True", reason="SourceUnhealthy", message="the feed cannot be read: HTTP 500"),
            ("Degraded", "SourceUnhealthy: the feed cannot be read: HTTP 500"),
            id="a feed that fails",
        ),
        pytest.param(
            schedule("False", stalled="True", reason="InvalidSpec", message="spec.cron: bad"),
            ("Degraded", "InvalidSpec: spec.cron: bad"),
            id="an invalid spec",
        ),
        pytest.param(
            schedule("False", reason="WaitingForFeed", message="the feed has not been read yet"),
            ("Progressing", "the feed has not been read yet"),
            id="the first read",
        ),
        pytest.param(schedule(None), ("Progressing", "waiting for the operator to plan the schedule"), id="new"),
        pytest.param(
            schedule(generation=2, observed=1),
            ("Progressing", "waiting for the operator to act on the new spec (generation 2)"),
            id="an edit not yet planned",
        ),
    ],
)
def test_botschedule_health(obj: dict[str, Any], expected: tuple[str, str]) -> None:
    assert health(obj, SCHEDULE_SCRIPT) == expected
