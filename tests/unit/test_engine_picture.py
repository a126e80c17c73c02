"""The engine's picture (runtime/cache.py) and the executor's writes (runtime/executor.py) through
recording fakes of its ports: what a write promises is an expectation beside the watch's dicts,
applied by the view mapping (runtime/views.py) until the watch brings the object again; nothing
kept is ever written into."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import fakes
from scheduledbot.adapters.bots import BotUnreachable
from scheduledbot.core import children, tokens
from scheduledbot.core.model import BotReport, CreatePod, DeletePod, Leave
from scheduledbot.runtime.cache import Cache, kept
from scheduledbot.runtime.classes import ClassCatalog
from scheduledbot.runtime.dispatcher import JoinDispatcher
from scheduledbot.runtime.executor import Executor
from scheduledbot.runtime.stager import Stager
from scheduledbot.runtime.views import bot_view, parsed_spec, pod_seen, pod_view
from scheduledbot.runtime.workqueue import Passes

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
KEY = ("team", "standup")
TOKEN_KEY = b"k" * tokens.MIN_KEY_BYTES


class RecordingApi:
    """The executor's `KubePort`: records each call; creating a Pod answers as the API server would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> bool:
        self.calls.append(("create_secret", body["metadata"]["name"]))
        return True

    async def create_pod(self, namespace: str, body: dict[str, Any], *, dry_run: bool = False) -> bool:
        self.calls.append(("create_pod", body["metadata"]["name"]))
        return True

    async def find_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("find_pod", name))
        return None

    async def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        self.calls.append(("delete_pod", uid))

    async def set_finalizer(self, body: dict[str, Any], finalizer: str, *, present: bool) -> dict[str, Any] | None:
        self.calls.append(("finalizer", str(present)))
        return None

    async def read_bot_class(self, name: str) -> dict[str, Any] | None:
        self.calls.append(("read_bot_class", name))
        return None


class RecordingBots:
    """The executor's `BotsPort`: leave calls fail while `failing` says so."""

    def __init__(self, failing: int = 0) -> None:
        self.leaves: list[str] = []
        self.failing = failing

    async def leave(self, address: str, token: str, *, reason: str) -> BotReport:
        self.leaves.append(address)
        if self.failing:
            self.failing -= 1
            raise BotUnreachable("connection refused")
        return BotReport(version=1, state="ended", since=None)

    async def move_self_join(self, address: str, token: str, *, join_at: datetime) -> BotReport:
        raise AssertionError("not asked here")


def bot() -> dict[str, Any]:
    body = fakes.bot_body("standup", join_at=NOW + timedelta(minutes=1), created_at=NOW)
    body["metadata"]["resourceVersion"] = "10"
    return body


def pod(uid: str = "pod-1", version: str = "20") -> dict[str, Any]:
    return {
        "metadata": {
            "name": children.pod_name("standup"),
            "namespace": "team",
            "uid": uid,
            "resourceVersion": version,
            "ownerReferences": [
                {
                    "apiVersion": "meetingbots.dev/v1alpha1",
                    "kind": "ScheduledBot",
                    "name": "standup",
                    "uid": "uid-standup",
                    "controller": True,
                }
            ],
        },
        "status": {"phase": "Running"},
    }


def executor(api: RecordingApi, bots: RecordingBots, passes: Passes[tuple[str, str]]) -> Executor:
    settings = fakes.settings(token_key=TOKEN_KEY)
    stager: Stager[tuple[str, str]] = Stager(poke=lambda key: None)
    dispatcher: JoinDispatcher[tuple[str, str]] = JoinDispatcher(report=lambda key, outcome: None)
    return Executor(
        settings=settings,
        kube=api,
        bots=bots,
        classes=ClassCatalog(),
        stager=stager,
        dispatcher=dispatcher,
        join_line=lambda **kwargs: None,  # type: ignore[arg-type]
        passes=passes,
    )


def test_kept_leaves_the_watch_events_dict_as_it_was() -> None:
    body = bot()
    body["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    before = copy.deepcopy(body)
    assert "managedFields" not in kept(body)["metadata"]
    assert body == before


def test_kept_bodies_share_their_keys_and_the_events_spec() -> None:
    first, second = bot(), bot()
    for body in (first, second):
        body["status"] = json.loads(json.dumps({"state": "scheduled", "conditions": [{"type": "Scheduled"}]}))
    a, b = kept(first), kept(second)
    assert a == first and b == second
    assert a["spec"] is first["spec"], "the BotSchedule index keeps the same spec dict"
    key_a = next(k for k in a["status"]["conditions"][0])
    key_b = next(k for k in b["status"]["conditions"][0])
    assert key_a is key_b and a["status"]["state"] is b["status"]["state"]


def _edited(body: dict[str, Any], *, metadata: dict[str, Any] | None = None, **parts: Any) -> dict[str, Any]:
    return {**body, **parts, "metadata": {**body["metadata"], **(metadata or {})}}


def test_a_spec_is_parsed_once_per_generation_of_its_bot() -> None:
    body = fakes.bot_body("standup", join_at=NOW + timedelta(minutes=5), created_at=NOW)
    first = bot_view(body, extra_hosts=frozenset())
    kept_spec = parsed_spec(first)
    assert first.spec is not None
    # A status write (or a finalizer's) leaves the generation: the parsed spec is reused.
    written = _edited(body, status={"state": "joining"}, metadata={"resourceVersion": "9", "finalizers": ["x"]})
    again = bot_view(written, extra_hosts=frozenset(), parsed=kept_spec)
    assert again.spec is first.spec and again.status.state == "joining"
    # A spec change counts a generation: parsed anew.
    edited = _edited(
        body, spec={**body["spec"], "meetingUrl": "https://zoom.us/j/987654321"}, metadata={"generation": 2}
    )
    moved = bot_view(edited, extra_hosts=frozenset(), parsed=kept_spec)
    assert moved.spec is not None and moved.spec.meeting_url == "https://zoom.us/j/987654321"
    # Another object under the same name (another uid), even at the same generation: parsed anew.
    other = _edited(body, spec={"meetingUrl": "not a url"}, metadata={"uid": "uid-other"})
    broken = bot_view(other, extra_hosts=frozenset(), parsed=kept_spec)
    assert broken.spec is None and broken.spec_error is not None and "spec.meetingUrl" in broken.spec_error
    # A spec that did not parse is kept as its error.
    assert bot_view(other, extra_hosts=frozenset(), parsed=parsed_spec(broken)).spec_error == broken.spec_error


async def test_a_deletion_is_an_expectation_until_the_watch_shows_the_pod_again() -> None:
    cache = Cache()
    assert cache.take_bot(KEY, bot())
    seen = cache.entry(KEY)
    event = pod()
    assert cache.take_pod(seen, event)
    before = copy.deepcopy(event)
    api = RecordingApi()
    passes = queue(_nothing)
    view = bot_view(seen.body or {}, extra_hosts=frozenset())
    act = executor(api, RecordingBots(), passes)
    assert await act.act(KEY, seen, act.memory(KEY), view, DeletePod(uid="pod-1"), NOW)
    assert api.calls == [("delete_pod", "pod-1")]
    assert event == before, "the watch event's own dict is not written into"
    seen_pod = pod_view(pod_seen(seen), "uid-standup")
    assert seen_pod is not None and seen_pod.deleting
    # The watch's next state of that Pod replaces the expectation.
    assert cache.take_pod(seen, pod(version="21"))
    seen_pod = pod_view(pod_seen(seen), "uid-standup")
    assert seen_pod is not None and not seen_pod.deleting
    await passes.close()


async def test_a_created_pod_is_seen_pending_until_its_watch_event() -> None:
    cache = Cache()
    cache.take_bot(KEY, bot())
    seen = cache.entry(KEY)
    api = RecordingApi()
    passes = queue(_nothing)
    act = executor(api, RecordingBots(), passes)
    view = bot_view(seen.body or {}, extra_hosts=frozenset())
    assert await act.act(KEY, seen, act.memory(KEY), view, CreatePod(join_at=NOW + timedelta(minutes=1)), NOW)
    assert api.calls == [("create_pod", children.pod_name("standup"))]
    assert seen.pod is None, "nothing the watch did not bring is kept as the watch's"
    expected = pod_view(pod_seen(seen), "uid-standup")
    assert expected is not None and expected.phase == "Pending" and expected.uid == ""
    assert cache.take_pod(seen, pod())
    assert seen.created is None
    real = pod_view(pod_seen(seen), "uid-standup")
    assert real is not None and real.uid == "pod-1"
    await passes.close()


@pytest.mark.looptime
async def test_a_failed_leave_is_taken_back_and_asked_again_at_the_next_pass() -> None:
    cache = Cache()
    cache.take_bot(KEY, bot())
    seen = cache.entry(KEY)
    passes_run: list[tuple[str, str]] = []

    async def run(key: tuple[str, str]) -> None:
        passes_run.append(key)

    passes = queue(run, clock=fakes.LoopClock())
    bots = RecordingBots(failing=1)
    act = executor(RecordingApi(), bots, passes)
    memory = act.memory(KEY)
    view = bot_view(seen.body or {}, extra_hosts=frozenset())
    passes.poke(KEY)
    await act.act(KEY, seen, memory, view, Leave(address="10.0.0.1:8080", reason="ScheduledBot deleted"), NOW)
    await act.act(KEY, seen, memory, view, Leave(address="10.0.0.1:8080", reason="ScheduledBot deleted"), NOW)
    await asyncio.sleep(1)
    assert bots.leaves == ["10.0.0.1:8080"], "asked once while in flight"
    assert memory.left == set() and memory.leave_failures == 1
    assert len(passes_run) == 2, "the failure brings a pass after its back-off"
    await passes.close()


async def _nothing(key: tuple[str, str]) -> None:
    return None


def queue(
    run: Callable[[tuple[str, str]], Awaitable[None]], clock: fakes.LoopClock | None = None
) -> Passes[tuple[str, str]]:
    log = logging.getLogger("test_engine_picture")
    return Passes(run=run, concurrency=1, label=str, known=lambda key: True, log=log, clock=clock)
