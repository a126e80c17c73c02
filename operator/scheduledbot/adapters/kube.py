"""The Kubernetes side: the only code that writes to the API server.

Why its own client beside kopf's
================================
kopf watches and serves the webhook; these writes (children, status, finalizers,
events, the webhook configuration) go through one `kubernetes_asyncio` client built
at start-up and passed in (never at import time, STYLE.md lesson 2).

Responses are read as raw JSON (`_preload_content=False`): the runtime needs the
written object back as a dict to refresh its cache, and turning it into generated
model classes only to turn it back would cost more than the request. With that
option the client does not raise on HTTP errors, so every call goes through `_send`,
which does.

Every permission, declared where it is used
===========================================
Each method names the RBAC permissions it needs (`@needs`); `PERMISSIONS` is their
union. The ClusterRole in manifests/rbac/ grants exactly that set (plus the watches
the runtime declares), and the tests compare both the file and what the API server
reports for the operator's ServiceAccount (`kubectl auth can-i --list`) with it: a
new call without its permission, or a permission no call uses, fails a test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from kubernetes_asyncio import client, config

from scheduledbot.api.joinat import format_time
from scheduledbot.api.resource import API_VERSION, BOT_CLASS, GROUP, KIND, PLURAL, VERSION

log = logging.getLogger(__name__)

COMPONENT: Final = "scheduledbot-operator"
_MERGE: Final = "application/merge-patch+json"
_JSON_PATCH: Final = "application/json-patch+json"
_STRATEGIC: Final = "application/strategic-merge-patch+json"


@dataclass(frozen=True, slots=True, order=True)
class Permission:
    """One RBAC permission: `verb` on `group`/`resource`; `named`: only on the configured object's name."""

    group: str
    resource: str
    verb: str
    named: bool = False


#: Every permission a method of `Kube` needs; see the module's docstring.
PERMISSIONS: set[Permission] = set()
#: The same, by method name, so that a test can tell a method that declares none.
NEEDED_BY: dict[str, tuple[Permission, ...]] = {}

_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def needs(*permissions: Permission) -> Callable[[_Method], _Method]:
    """Declare the permissions a `Kube` method uses."""

    def declare(method: _Method) -> _Method:
        PERMISSIONS.update(permissions)
        NEEDED_BY[method.__name__] = permissions
        return method

    return declare


def _core(resource: str, verb: str) -> Permission:
    return Permission("", resource, verb)


def _ours(resource: str, verb: str) -> Permission:
    return Permission(GROUP, resource, verb)


_WEBHOOKS: Final = ("admissionregistration.k8s.io", "validatingwebhookconfigurations")


class ApiError(Exception):
    """The API server refused a request: its HTTP status and its own message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Kube:
    """Writes for the runtime. Create calls treat AlreadyExists as success."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._admission = client.AdmissionregistrationV1Api(api)
        self._authorization = client.AuthorizationV1Api(api)

    @classmethod
    async def connect(cls) -> Kube:
        """In a Pod, its ServiceAccount; elsewhere, the current kubeconfig."""
        try:
            config.load_incluster_config()
        except config.ConfigException:
            await config.load_kube_config()
        return cls(client.ApiClient())

    async def close(self) -> None:
        await self._api.close()

    @needs(_core("pods", "create"))
    async def create_pod(self, namespace: str, body: dict[str, Any], *, dry_run: bool = False) -> bool:
        """Create the Pod; False when it already exists (which is success)."""
        options = {"dry_run": "All"} if dry_run else {}
        return await _create(self._core.create_namespaced_pod(namespace, body, _preload_content=False, **options))

    @needs(_core("secrets", "create"))
    async def create_secret(self, namespace: str, body: dict[str, Any]) -> bool:
        return await _create(self._core.create_namespaced_secret(namespace, body, _preload_content=False))

    @needs(_core("secrets", "get"))
    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await _send(self._core.read_namespaced_secret(name, namespace, _preload_content=False), missing=(404,))

    @needs(_core("pods", "list"))
    async def list_pods(self, namespace: str | None, *, label: str) -> list[dict[str, Any]]:
        """Bot Pods, to know them before the first pass (the Pod watch may lag the bots')."""
        if namespace is None:
            call = self._core.list_pod_for_all_namespaces(label_selector=label, _preload_content=False)
        else:
            call = self._core.list_namespaced_pod(namespace, label_selector=label, _preload_content=False)
        listed = await _send(call)
        assert listed is not None
        return list(listed.get("items") or [])

    @needs(_core("pods", "delete"))
    async def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        """Delete exactly the observed Pod (a precondition on its uid), if still there."""
        body = {"preconditions": {"uid": uid}}
        await _send(
            self._core.delete_namespaced_pod(name, namespace, body=body, _preload_content=False), missing=(404, 409)
        )

    @needs(_ours(f"{PLURAL}/status", "patch"))
    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch `.status`; returns the object as written, None if it is gone."""
        return await _send(
            self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": status},
                _content_type=_MERGE,
                _preload_content=False,
            ),
            missing=(404,),
        )

    # finalizers/update: the children's ownerReferences set blockOwnerDeletion, which
    # clusters running the OwnerReferencesPermissionEnforcement plugin allow only with it.
    @needs(_ours(PLURAL, "patch"), _ours(f"{PLURAL}/finalizers", "update"))
    async def set_finalizer(self, body: dict[str, Any], finalizer: str, *, present: bool) -> dict[str, Any] | None:
        """Add or remove one finalizer with a JSON patch guarded by the observed list."""
        meta = body["metadata"]
        current = list(meta.get("finalizers") or [])
        if (finalizer in current) == present:
            return None
        wanted = [*current, finalizer] if present else [f for f in current if f != finalizer]
        # `test` makes the patch fail (422) if someone changed the list meanwhile;
        # the next watch event brings the new list and the pass runs again.
        ops: list[dict[str, Any]] = (
            [{"op": "test", "path": "/metadata/finalizers", "value": current}] if "finalizers" in meta else []
        ) + [{"op": "add", "path": "/metadata/finalizers", "value": wanted}]
        return await _send(
            self._custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                meta["namespace"],
                PLURAL,
                meta["name"],
                ops,
                _content_type=_JSON_PATCH,
                _preload_content=False,
            ),
            missing=(404, 422),
        )

    @needs(_core("events", "create"))
    async def post_event(
        self, body: dict[str, Any], *, type_: str, reason: str, message: str, now: datetime, count: int = 1
    ) -> None:
        meta = body["metadata"]
        stamp = format_time(now)
        event = {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": count,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
        }
        try:
            await _send(self._core.create_namespaced_event(meta["namespace"], event, _preload_content=False))
        except ApiError as error:
            # An event is a courtesy: losing one must not fail the pass that emitted it.
            log.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], error)

    # Development only (--webhook-configuration=write, with an administrator's credentials):
    # the installed operator's RBAC grants none of these, and no code path of an
    # installed operator calls them.
    @needs()
    async def apply_webhook_configuration(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        if await _create(self._admission.create_validating_webhook_configuration(body, _preload_content=False)):
            return
        current = await _send(self._admission.read_validating_webhook_configuration(name, _preload_content=False))
        assert current is not None
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
        await _send(self._admission.replace_validating_webhook_configuration(name, body, _preload_content=False))

    @needs()
    async def delete_webhook_configuration(self, name: str, *, ca_bundle: str) -> None:
        """Delete the configuration if it still carries our CA (a successor's is left alone)."""
        current = await _send(
            self._admission.read_validating_webhook_configuration(name, _preload_content=False), missing=(404,)
        )
        if current is None or any(
            w.get("clientConfig", {}).get("caBundle") != ca_bundle for w in current.get("webhooks") or []
        ):
            return
        body = {"preconditions": {"resourceVersion": current["metadata"]["resourceVersion"]}}
        await _send(
            self._admission.delete_validating_webhook_configuration(name, body=body, _preload_content=False),
            missing=(404, 409),
        )

    @needs(Permission(*_WEBHOOKS, "patch", named=True))
    async def patch_webhook_ca(self, name: str, *, webhooks: Sequence[str], ca_bundle: str) -> None:
        """Set the caBundle of each named webhook of the installed configuration `name`, and nothing else.

        A strategic merge patch merges the webhooks list by name: the rest of the
        configuration (rules, matchConditions, failure policies) stays as installed.
        A webhook name the configuration lacks would be added without rules, which
        the API server refuses: a mismatch fails loudly instead of patching nothing.
        """
        patch = {"webhooks": [{"name": webhook, "clientConfig": {"caBundle": ca_bundle}} for webhook in webhooks]}
        try:
            await _send(
                self._admission.patch_validating_webhook_configuration(
                    name, patch, _content_type=_STRATEGIC, _preload_content=False
                )
            )
        except ApiError as error:
            if error.status == 404:
                raise ApiError(
                    404,
                    f"ValidatingWebhookConfiguration {name!r} is not installed: apply manifests/ (it ships the "
                    "configuration), or run with --webhook-configuration=write outside a cluster",
                ) from None
            raise

    @needs(_ours(BOT_CLASS.plural, "list"))
    async def list_bot_classes(self) -> list[dict[str, Any]]:
        """Every BotClass, so that the webhook knows them all before it answers its first review.

        A CRD established a moment ago answers 429 "storage is (re)initializing" for about
        a second: that is waited out, a few times, growing; anything else is raised.
        """
        for delay in (0.2, 0.5, 1.0, 2.0, 4.0, None):
            try:
                listed = await _send(
                    self._custom.list_cluster_custom_object(GROUP, VERSION, BOT_CLASS.plural, _preload_content=False)
                )
            except ApiError as error:
                if error.status != 429 or delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            assert listed is not None
            return list(listed.get("items") or [])
        raise AssertionError("unreachable")

    @needs(_ours(BOT_CLASS.plural, "get"))
    async def read_bot_class(self, name: str) -> dict[str, Any] | None:
        """One BotClass, for a review that names a class the watch has not brought yet."""
        return await _send(
            self._custom.get_cluster_custom_object(GROUP, VERSION, BOT_CLASS.plural, name, _preload_content=False),
            missing=(404,),
        )

    @needs(Permission("authorization.k8s.io", "localsubjectaccessreviews", "create"))
    async def may(
        self,
        *,
        user: str,
        uid: str,
        groups: Sequence[str],
        extra: Mapping[str, Sequence[str]],
        namespace: str,
        verb: str,
        resource: str,
        name: str | None,
    ) -> bool:
        """Whether the API server's authorizer lets the user do `verb` on `resource` in `namespace`.

        A LocalSubjectAccessReview: it needs a right in the namespace only, so the
        namespaced install grants it with a Role.
        """
        attributes: dict[str, Any] = {"namespace": namespace, "verb": verb, "group": "", "resource": resource}
        if name:
            attributes["name"] = name
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "LocalSubjectAccessReview",
            "metadata": {"namespace": namespace},
            "spec": {
                "user": user,
                "uid": uid,
                "groups": list(groups),
                "extra": {key: list(values) for key, values in extra.items()},
                "resourceAttributes": attributes,
            },
        }
        answer = await _send(
            self._authorization.create_namespaced_local_subject_access_review(namespace, body, _preload_content=False)
        )
        return bool(answer and (answer.get("status") or {}).get("allowed"))


async def _send(call: Any, *, missing: tuple[int, ...] = ()) -> dict[str, Any] | None:
    """The call's JSON answer; None for a status in `missing`; ApiError for any other error."""
    response = await call
    try:
        payload = await response.read()
    finally:
        response.release()
    if response.status in missing:
        return None
    if response.status >= 400:
        raise ApiError(response.status, _message(payload) or str(response.reason))
    data: dict[str, Any] = json.loads(payload) if payload else {}
    return data


def _message(payload: bytes) -> str | None:
    """The API server's own explanation, from its Status document."""
    try:
        message = json.loads(payload).get("message")
    except (ValueError, AttributeError):
        return None
    return str(message) if message else None


async def _create(call: Any) -> bool:
    """Create; False when the object already exists (which is success: names are deterministic)."""
    return await _send(call, missing=(409,)) is not None
