"""The reconcile engine with fake adapters that record what it asks of them (sample-controller style).

No API server here: the end-to-end tests cover the real one. These check the engine's
own promises: one write per transition, no repeat for a duplicate or stale watch event,
and a refused Pod ending the bot instead of retrying forever.
"""

from __future__ import annotations

import asyncio
import base64
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import fakes
from scheduledbot.adapters.kube import ApiError
from scheduledbot.core import children, tokens
from scheduledbot.runtime.classes import ClassCatalog
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.engine import Engine
from scheduledbot.runtime.metrics import Metrics


class FakeKube:
    """Records every call; the written object comes back with a new resourceVersion."""

    def __init__(self, *, refuse_pods: bool = False, existing_pod: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.version = 100
        self.refuse_pods = refuse_pods
        #: A Pod already there under the bot Pod's name: creating it answers AlreadyExists.
        self.existing_pod = existing_pod
        self.secrets: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.current: dict[str, Any] = {}

    def _written(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        return body

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch_status", status.get("state")))
        body = copy.deepcopy(self.current)
        body["status"] = {k: v for k, v in {**(body.get("status") or {}), **status}.items() if v is not None}
        self.current = self._written(body)
        return copy.deepcopy(self.current)

    async def post_event(
        self, body: dict[str, Any], *, type_: str, reason: str, message: str, now: datetime, count: int = 1
    ) -> None:
        self.calls.append(("event", reason))

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> bool:
        self.calls.append(("create_secret", body["metadata"]["name"]))
        self.secrets[body["metadata"]["name"]] = body
        return True

    async def create_pod(self, namespace: str, body: dict[str, Any], *, dry_run: bool = False) -> bool:
        self.calls.append(("create_pod", body["metadata"]["name"]))
        if self.refuse_pods:
            raise ApiError(422, 'Pod "x-bot" is invalid: spec.containers[0].image: Required value')
        if self.existing_pod is not None:
            return False
        self.pods[body["metadata"]["name"]] = body
        return True

    async def find_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("find_pod", name))
        return self.existing_pod

    async def read_bot_class(self, name: str) -> dict[str, Any] | None:
        self.calls.append(("read_bot_class", name))
        return None

    async def set_finalizer(self, body: dict[str, Any], finalizer: str, *, present: bool) -> None:
        self.calls.append(("finalizer", present))


KEY = b"k" * 32


def settings() -> Settings:
    return fakes.settings(template={"spec": {"containers": [{"name": "bot"}]}}, token_key=KEY)


def new_bot(*, join_in: timedelta, lead: int = 300) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "apiVersion": "meetingbots.dev/v1alpha1",
        "kind": "ScheduledBot",
        "metadata": {
            "name": "standup",
            "namespace": "team",
            "uid": "uid-1",
            "generation": 1,
            "resourceVersion": "100",
            "creationTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": {
            "meetingUrl": "https://zoom.us/j/123456789",
            "joinAt": (now + join_in).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "stagingLeadSeconds": lead,
        },
    }


async def settle(engine: Engine) -> None:
    for _ in range(50):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)


async def run(kube: FakeKube, body: dict[str, Any]) -> Engine:
    kube.current = body
    engine = Engine(settings=settings(), kube=kube, bots=None, metrics=Metrics())  # type: ignore[arg-type]
    engine.bot_event(None, copy.deepcopy(body))
    await settle(engine)
    return engine


async def test_a_new_bot_is_scheduled_with_one_status_write_then_one_event() -> None:
    kube = FakeKube()
    engine = await run(kube, new_bot(join_in=timedelta(hours=1)))
    # The status first: it is what `kubectl get sbot` shows; the Event follows in the background.
    assert kube.calls == [("patch_status", "scheduled"), ("event", "Scheduled")]
    await engine.close()


async def test_a_duplicate_or_stale_watch_event_writes_nothing() -> None:
    kube = FakeKube()
    original = new_bot(join_in=timedelta(hours=1))
    engine = await run(kube, original)
    written = len(kube.calls)
    engine.bot_event("MODIFIED", copy.deepcopy(original))  # older than what the engine wrote
    engine.bot_event("MODIFIED", copy.deepcopy(kube.current))  # the write's own watch event
    await settle(engine)
    assert len(kube.calls) == written
    await engine.close()


async def test_a_bot_due_for_staging_is_scheduled_then_staged_in_two_writes() -> None:
    kube = FakeKube()
    engine = await run(kube, new_bot(join_in=timedelta(minutes=10), lead=900))
    assert [c for c in kube.calls if c[0] != "event"] == [
        ("patch_status", "scheduled"),
        ("create_secret", children.secret_name("standup", tokens.secret_tag(KEY, uid="uid-1"))),
        ("create_pod", "standup-bot"),
        ("patch_status", "staged"),
    ]
    # Each Event after its own status.
    assert kube.calls.index(("event", "Scheduled")) > kube.calls.index(("patch_status", "scheduled"))
    assert kube.calls.index(("event", "Staged")) > kube.calls.index(("patch_status", "staged"))
    await engine.close()


async def test_a_pod_the_api_server_refuses_fails_the_bot_once() -> None:
    kube = FakeKube(refuse_pods=True)
    engine = await run(kube, new_bot(join_in=timedelta(minutes=10), lead=900))
    pods = [c for c in kube.calls if c[0] == "create_pod"]
    statuses = [c[1] for c in kube.calls if c[0] == "patch_status"]
    assert len(pods) == 1
    assert statuses == ["scheduled", "failed"]
    assert kube.current["status"]["reason"] == "PodRejected"
    assert "spec.containers[0].image" in kube.current["status"]["message"]
    await engine.close()


def with_template(body: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    body["spec"]["template"] = template
    return body


async def test_a_template_that_breaks_the_baseline_fails_the_bot_before_any_pod_is_created() -> None:
    # The webhook may have been bypassed: the pass applies the same checks.
    kube = FakeKube()
    template = {"spec": {"hostNetwork": True, "containers": [{"name": "bot", "image": "x"}]}}
    engine = await run(kube, with_template(new_bot(join_in=timedelta(minutes=10), lead=900), template))
    assert not [c for c in kube.calls if c[0] == "create_pod"]
    assert [c[1] for c in kube.calls if c[0] == "patch_status"] == ["scheduled", "failed"]
    assert kube.current["status"]["reason"] == "InvalidTemplate"
    assert "spec.template.spec.hostNetwork" in kube.current["status"]["message"]
    await engine.close()


async def test_a_bot_whose_class_was_deleted_fails_naming_it() -> None:
    kube = FakeKube()
    body = new_bot(join_in=timedelta(minutes=10), lead=900)
    body["spec"]["botClassName"] = "recorders"
    engine = await run(kube, body)
    assert ("read_bot_class", "recorders") in kube.calls  # asked before concluding it is gone
    assert not [c for c in kube.calls if c[0] == "create_pod"]
    assert kube.current["status"]["reason"] == "BotClassNotFound"
    assert 'BotClass "recorders" does not exist' in kube.current["status"]["message"]
    await engine.close()


async def test_the_pod_is_built_from_the_class_template_within_the_class_limits() -> None:
    kube = FakeKube()
    classes = ClassCatalog()
    classes.replace(
        [
            {
                "metadata": {"name": "recorders", "annotations": {"meetingbots.dev/is-default-class": "true"}},
                "spec": {
                    "template": {"spec": {"containers": [{"name": "bot", "image": "registry.example/recorder:1"}]}},
                    "limits": {"maxDurationSeconds": 600},
                },
            }
        ]
    )
    kube.current = new_bot(join_in=timedelta(minutes=10), lead=900)
    engine = Engine(settings=settings(), kube=kube, bots=None, metrics=Metrics(), classes=classes)  # type: ignore[arg-type]
    engine.bot_event(None, copy.deepcopy(kube.current))
    await settle(engine)
    (pod,) = kube.pods.values()
    bot = pod["spec"]["containers"][0]
    assert bot["image"] == "registry.example/recorder:1"
    assert {"name": "MAX_DURATION_SECONDS", "value": "600"} in bot["env"]
    await engine.close()


async def test_a_foreign_pod_under_the_bots_pod_name_is_never_adopted() -> None:
    foreign = {"metadata": {"name": "standup-bot", "namespace": "team", "uid": "someone-elses"}}
    kube = FakeKube(existing_pod=foreign)
    engine = await run(kube, new_bot(join_in=timedelta(minutes=10), lead=900))
    assert [c[0] for c in kube.calls].count("create_pod") == 1  # no retry loop
    assert kube.current["status"]["state"] == "failed"
    assert kube.current["status"]["reason"] == "NameConflict"
    assert "standup-bot" in kube.current["status"]["message"]
    await engine.close()


@pytest.mark.parametrize("uid", ["uid-1", "uid-of-a-deleted-predecessor"], ids=["this-bot", "predecessor"])
async def test_a_pod_of_this_bot_or_of_its_predecessor_of_the_same_name_is_no_conflict(uid: str) -> None:
    # A predecessor's Pod is on its way out (its owner is gone); it is never used (its uid differs).
    owner = {"apiVersion": "meetingbots.dev/v1alpha1", "kind": "ScheduledBot", "name": "standup", "uid": uid}
    ours = {"metadata": {"name": "standup-bot", "uid": "p", "ownerReferences": [{**owner, "controller": True}]}}
    kube = FakeKube(existing_pod=ours)
    engine = await run(kube, new_bot(join_in=timedelta(minutes=10), lead=900))
    assert kube.current["status"]["state"] == "staged"
    await engine.close()


async def test_the_token_is_derived_so_a_restarted_engine_knows_it_without_reading_the_secret() -> None:
    kube = FakeKube()
    engine = await run(kube, new_bot(join_in=timedelta(minutes=10), lead=900))
    (secret,) = kube.secrets.values()
    handed = base64.b64decode(secret["data"]["token"]).decode()
    assert handed == tokens.bot_token(KEY, namespace="team", name="standup", uid="uid-1")
    assert not hasattr(kube, "read_secret")  # nothing to read back after a restart
    await engine.close()


class SlowEvents(FakeKube):
    """An API server whose Event writes are slow: statuses must not wait for them."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def post_event(
        self, body: dict[str, Any], *, type_: str, reason: str, message: str, now: datetime, count: int = 1
    ) -> None:
        await self.release.wait()
        self.calls.append(("event", reason))


async def test_a_slow_event_write_does_not_hold_back_the_next_status() -> None:
    kube = SlowEvents()
    engine = await run(kube, new_bot(join_in=timedelta(minutes=10), lead=900))
    # Both transitions are written while the first Event is still on its way.
    assert [c for c in kube.calls if c[0] == "patch_status"] == [
        ("patch_status", "scheduled"),
        ("patch_status", "staged"),
    ]
    assert not [c for c in kube.calls if c[0] == "event"]
    kube.release.set()
    await settle(engine)
    assert [c[1] for c in kube.calls if c[0] == "event"] == ["Scheduled", "Staged"]
    await engine.close()


async def test_a_bot_staged_too_close_to_join_at_is_reported_late_before_join_at() -> None:
    kube = FakeKube()
    kube.current = new_bot(join_in=timedelta(seconds=5), lead=900)
    metrics = Metrics()
    engine = Engine(settings=settings(), kube=kube, bots=None, metrics=metrics)  # type: ignore[arg-type]
    engine.bot_event(None, copy.deepcopy(kube.current))
    await settle(engine)
    # Staged at once, but a Pod needs longer than 5 s to be Ready: said now, not after joinAt.
    assert ("create_pod", "standup-bot") in kube.calls
    assert ("event", "LateStaging") in kube.calls
    assert metrics.registry.get_sample_value("scheduledbot_late_staging_total") == 1
    late = [c for c in kube.current["status"]["conditions"] if c["type"] == "ReadyBeforeJoin"]
    assert [(c["status"], c["reason"]) for c in late] == [("False", "LateStaging")]
    await engine.close()
