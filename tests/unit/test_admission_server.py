"""The webhook's HTTP side and its reviewer, with a fake Kube that records what it is asked.

The server: reviews up to its limit are read whole, larger ones are denied by the uid
in their first bytes (never answered 413, which `failurePolicy: Ignore` would turn into
an admission), bodies it cannot read get 400 and a sentence, never Python's words, and
never `allowed`. The reviewer: ratcheting, the access review as the author, and the dry
run only for an authenticated caller, in the review's own namespace.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

import fakes
from scheduledbot.adapters.kube import ApiError
from scheduledbot.api.review import AdmissionRequest, review_uid
from scheduledbot.core.children import default_template
from scheduledbot.runtime.admission import MAX_REVIEW_BYTES, AdmissionServer, Decision, Reviewer
from scheduledbot.runtime.classes import ClassCatalog
from scheduledbot.runtime.config import Settings

UID = "705ab4f5-6393-11e8-b7cc-42010a800002"
ALLOW = Decision(True)


def join_at() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def bot(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "meetingbots.dev/v1alpha1",
        "kind": "ScheduledBot",
        "metadata": {"name": "standup", "namespace": "team-a"},
        "spec": {"meetingUrl": "https://zoom.us/j/123456789", "joinAt": join_at(), **spec},
    }


def review(
    obj: Any = None, *, operation: str = "CREATE", old: Any = None, namespace: str = "team-a", **request: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "meetingbots.dev", "version": "v1alpha1", "kind": "ScheduledBot"},
            "resource": {"group": "meetingbots.dev", "version": "v1alpha1", "resource": "scheduledbots"},
            "name": "standup",
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "alice", "uid": "u-1", "groups": ["team-a", "system:authenticated"]},
            "object": bot() if obj is None else obj,
            "oldObject": old,
            **request,
        },
    }


# --- the server ------------------------------------------------------------------------------------


class Recorder:
    def __init__(self, decision: Decision = ALLOW) -> None:
        self.seen: list[tuple[AdmissionRequest, bool]] = []
        self.decision = decision

    async def __call__(self, request: AdmissionRequest, authenticated: bool) -> Decision:
        self.seen.append((request, authenticated))
        return self.decision


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestClient[Any, Any], Recorder, list[str]]]:
    recorder = Recorder(Decision(False, "spec.joinAt: no"))
    results: list[str] = []
    server = AdmissionServer(review=recorder, client_names=frozenset(), on_result=results.append)
    async with TestClient(TestServer(server.application())) as client:
        yield client, recorder, results


async def post(client: TestClient[Any, Any], body: bytes) -> tuple[int, Any]:
    response = await client.post("/validate", data=body, headers={"Content-Type": "application/json"})
    text = await response.text()
    return response.status, json.loads(text)


async def test_a_review_is_answered_with_its_uid_and_the_decision(served: Any) -> None:
    client, recorder, results = served
    status, answer = await post(client, json.dumps(review()).encode())
    assert status == 200
    assert answer == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": UID, "allowed": False, "status": {"code": 422, "message": "spec.joinAt: no"}},
    }
    [(request, authenticated)] = recorder.seen
    assert (request.namespace, request.user_info.username, authenticated) == ("team-a", "alice", False)
    assert results == ["denied"]


async def test_a_review_over_one_mebibyte_is_read_and_reviewed(served: Any) -> None:
    client, recorder, _ = served
    body = json.dumps(review(bot(botConfig={"blob": "x" * 1_200_000}))).encode()
    status, answer = await post(client, body)
    assert (status, answer["response"]["allowed"]) == (200, False)
    assert recorder.seen[0][0].object is not None


async def test_a_review_over_the_limit_is_denied_by_its_uid_never_left_to_the_failure_policy(served: Any) -> None:
    client, recorder, results = served
    body = json.dumps(review(bot(botConfig={"blob": "<" * (MAX_REVIEW_BYTES + 10)}))).encode()
    status, answer = await post(client, body)
    assert status == 200
    assert answer["response"]["uid"] == UID and answer["response"]["allowed"] is False
    assert "too large to review" in answer["response"]["status"]["message"]
    assert recorder.seen == [] and results == ["oversized"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param(b"not json", "the body is not JSON", id="not JSON"),
        pytest.param(b"[1, 2]", "the body is not a JSON object", id="a list"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested too deeply", id="100,000 levels deep"),
        pytest.param(b'{"apiVersion": "admission.k8s.io/v1"}', "kind is required", id="no kind"),
        pytest.param(
            json.dumps({**review(), "apiVersion": "admission.k8s.io/v1beta1"}).encode(),
            "apiVersion is not what",
            id="another version, but its uid is found: denied, not 400",
        ),
    ],
)
async def test_a_body_that_is_not_a_review_is_never_allowed_and_gets_words_not_python(
    served: Any, body: bytes, words: str
) -> None:
    client, recorder, _ = served
    status, answer = await post(client, body)
    assert recorder.seen == []
    if status == 200:
        assert answer["response"] == {
            "uid": UID,
            "allowed": False,
            "status": {"code": 400, "message": answer["response"]["status"]["message"]},
        }
        message = answer["response"]["status"]["message"]
    else:
        assert status == 400
        message = answer["message"]
    assert words in message
    assert "Traceback" not in message and "Error" not in message and "pydantic" not in message


async def test_a_review_with_a_malformed_request_is_denied_naming_the_field(served: Any) -> None:
    client, _, _ = served
    broken = review()
    broken["request"]["operation"] = "EXPLODE"
    status, answer = await post(client, json.dumps(broken).encode())
    assert status == 200 and answer["response"]["allowed"] is False
    assert (
        answer["response"]["status"]["message"]
        == "malformed review: request.operation is not what an AdmissionReview holds there"
    )


def test_the_uid_is_found_where_the_api_server_writes_it() -> None:
    head = (
        b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"' + UID.encode() + b'","kind"'
    )
    assert review_uid(head) == UID
    assert review_uid(b'{"request":{"name":"x","uid":"' + UID.encode() + b'"}}') is None
    assert review_uid(b'{"request":{"uid":"../../etc"}}') is None


async def test_a_caller_whose_certificate_names_no_accepted_client_is_refused() -> None:
    recorder = Recorder()
    server = AdmissionServer(review=recorder, client_names=frozenset({"kube-apiserver-webhook-client"}))
    async with TestClient(TestServer(server.application())) as client:
        status, answer = await post(client, json.dumps(review()).encode())
    assert status == 403 and "client certificate" in answer["message"]
    assert recorder.seen == []


# --- the reviewer ------------------------------------------------------------------------------------


class FakeKube:
    def __init__(self, *, allowed: set[tuple[str, str, str | None]] | None = None, dry_run: ApiError | None = None):
        self.allowed = allowed or set()
        self.dry_run = dry_run
        self.calls: list[tuple[str, Any]] = []

    async def may(self, *, user: str, namespace: str, verb: str, resource: str, name: str | None, **_: Any) -> bool:
        self.calls.append(("may", (user, namespace, verb, resource, name)))
        return (verb, resource, name) in self.allowed

    async def read_bot_class(self, name: str) -> dict[str, Any] | None:
        self.calls.append(("read_bot_class", name))
        if name != "fresh":
            return None
        spec = {"allowedPlatforms": ["google_meet"]}
        return {"apiVersion": "meetingbots.dev/v1alpha1", "kind": "BotClass", "metadata": {"name": name}, "spec": spec}

    async def create_pod(self, namespace: str, body: dict[str, Any], *, dry_run: bool = False) -> bool:
        self.calls.append(("create_pod", (namespace, body["metadata"]["namespace"], dry_run)))
        if self.dry_run is not None:
            raise self.dry_run
        return True


def settings() -> Settings:
    return fakes.settings(template=default_template(image="demo:1"), webhook=True)


def request(obj: Any = None, **fields: Any) -> AdmissionRequest:
    return AdmissionRequest.model_validate(review(obj, **fields)["request"])


async def decide(kube: FakeKube, req: AdmissionRequest, *, authenticated: bool = True) -> Decision:
    reviewer = Reviewer(settings=settings(), kube=kube, classes=ClassCatalog())  # type: ignore[arg-type]
    return await reviewer.review(req, authenticated=authenticated)


TEMPLATE = {"spec": {"containers": [{"name": "bot", "image": "mine:1", "envFrom": [{"secretRef": {"name": "db"}}]}]}}


async def test_an_update_that_leaves_the_spec_alone_is_admitted_without_a_look() -> None:
    kube = FakeKube()
    broken = bot(joinAt="2020-01-01T00:00:00Z")  # would be refused if looked at
    assert await decide(kube, request(broken, operation="UPDATE", old=broken)) == Decision(True)
    assert kube.calls == []


async def test_any_update_of_a_bot_being_deleted_is_admitted() -> None:
    kube = FakeKube()
    old = bot()
    old["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    new = bot(template=TEMPLATE)
    assert await decide(kube, request(new, operation="UPDATE", old=old)) == Decision(True)
    assert kube.calls == []


async def test_an_inline_template_is_reviewed_as_its_author_in_the_namespace_of_the_review() -> None:
    kube = FakeKube()
    decision = await decide(kube, request(bot(template=TEMPLATE)))
    assert not decision.allowed
    assert 'user "alice" may not create Pods in namespace "team-a"' in decision.message
    assert 'user "alice" may not read Secret "db"' in decision.message
    assert kube.calls == [
        ("may", ("alice", "team-a", "create", "pods", None)),
        ("may", ("alice", "team-a", "get", "secrets", "db")),
    ]


async def test_an_author_with_the_rights_is_admitted_after_a_dry_run_in_the_reviews_namespace() -> None:
    kube = FakeKube(allowed={("create", "pods", None), ("get", "secrets", "db")})
    assert await decide(kube, request(bot(template=TEMPLATE))) == Decision(True)
    assert kube.calls[-1] == ("create_pod", ("team-a", "team-a", True))


async def test_an_unauthenticated_caller_gets_no_dry_run() -> None:
    kube = FakeKube(dry_run=ApiError(422, "would be refused"))
    assert await decide(kube, request(), authenticated=False) == Decision(True)
    assert [name for name, _ in kube.calls] == []
    refused = await decide(kube, request(), authenticated=True)
    assert refused == Decision(False, "the operator's default template: the bot Pod would be refused: would be refused")


async def test_an_object_in_another_namespace_than_the_review_is_refused_before_anything_runs() -> None:
    kube = FakeKube()
    other = bot()
    other["metadata"]["namespace"] = "kube-system"
    decision = await decide(kube, request(other))
    assert decision == Decision(False, "metadata.namespace: must be the namespace of the request")
    assert kube.calls == []


async def test_an_access_review_that_fails_counts_as_denied() -> None:
    class Failing(FakeKube):
        async def may(self, **_: Any) -> bool:
            raise ApiError(500, "etcd is down")

    decision = await decide(Failing(), request(bot(template=TEMPLATE)))
    assert not decision.allowed and "may not create Pods" in decision.message


async def test_reviews_of_other_kinds_are_refused_and_deletes_pass() -> None:
    kube = FakeKube()
    other = request(kind={"group": "", "version": "v1", "kind": "Secret"})
    assert await decide(kube, other) == Decision(False, "this webhook reviews ScheduledBots of meetingbots.dev only")
    assert await decide(kube, request(operation="DELETE")) == Decision(True)


async def test_a_class_created_a_moment_ago_is_read_once_and_then_known() -> None:
    kube = FakeKube()
    reviewer = Reviewer(settings=settings(), kube=kube, classes=ClassCatalog())  # type: ignore[arg-type]
    for _ in range(2):
        decision = await reviewer.review(request(bot(botClassName="fresh")), authenticated=False)
        assert decision == Decision(
            False, 'spec.meetingUrl: zoom meetings are not allowed by BotClass "fresh" (google_meet)'
        )
    assert kube.calls == [("read_bot_class", "fresh")]
    missing = await reviewer.review(request(bot(botClassName="gone")), authenticated=False)
    assert missing == Decision(False, 'spec.botClassName: BotClass "gone" does not exist')
