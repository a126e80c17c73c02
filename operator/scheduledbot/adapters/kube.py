"""The Kubernetes side: the only code that writes to the API server.

Why its own client beside kopf's
================================
kopf watches and serves the webhook; these writes (children, status, finalizers,
events, the webhook configuration) go through one `kubernetes_asyncio` client built
at start-up and passed in (never at import time: importing a module must not need a
cluster or credentials).

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
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from kubernetes_asyncio import client, config

from scheduledbot.api.resource import API_VERSION, BOT_CLASS, BOT_SCHEDULE, GROUP, KIND, PLURAL, VERSION
from scheduledbot.timestamps import format_time

log = logging.getLogger(__name__)

COMPONENT: Final = "scheduledbot-operator"
_MERGE: Final = "application/merge-patch+json"
_JSON_PATCH: Final = "application/json-patch+json"
_STRATEGIC: Final = "application/strategic-merge-patch+json"


@dataclass(frozen=True, slots=True, order=True)
class Permission:
    """One RBAC permission: `verb` on `group`/`resource`.

    `named`: only on the one object the operator is configured to use (its flag names it).
    `home`: only in the operator's own namespace (granted by a Role there, not cluster-wide).
    `tenant`: granted by the tenant whose spec names the object, on that object only (a Role
    with resourceNames in their namespace); never by the operator's own roles.
    """

    group: str
    resource: str
    verb: str
    named: bool = False
    home: bool = False
    tenant: bool = False


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


def _own_secret(verb: str, *, named: bool = True) -> Permission:
    return Permission("", "secrets", verb, named=named, home=True)


def _lease(verb: str, *, named: bool = True) -> Permission:
    return Permission("coordination.k8s.io", "leases", verb, named=named, home=True)


_WEBHOOKS: Final = ("admissionregistration.k8s.io", "validatingwebhookconfigurations")


def _no_lookups_per_request(api: client.ApiClient) -> None:
    """Turn off aiohttp's `trust_env` in the client's session unless a proxy is configured for the API server.

    kubernetes_asyncio opens its session with `trust_env=True`, with which aiohttp reads
    ~/.netrc and the proxy variables again for every request, each in a thread of its
    own: two thread hand-overs per status write, about a tenth of the operator's loop
    while 1,000 bots' statuses are written at a join instant (py-spy). The API server's
    address is fixed, so the question is asked once, here: with a proxy in the
    environment for it, the session keeps aiohttp's behaviour; without, nothing is looked
    up (and no ~/.netrc password is sent to the API server).
    """
    url = urllib.parse.urlsplit(api.configuration.host)
    if url.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(url.hostname or ""):
        return
    # aiohttp has no setter: the attribute behind its read-only `trust_env` (checked by a unit test).
    api.rest_client.pool_manager._trust_env = False


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
        self._coordination = client.CoordinationV1Api(api)

    @classmethod
    async def connect(cls) -> Kube:
        """In a Pod, its ServiceAccount; elsewhere, the current kubeconfig."""
        try:
            config.load_incluster_config()
        except config.ConfigException:
            await config.load_kube_config()
        api = client.ApiClient()
        _no_lookups_per_request(api)
        return cls(api)

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

    @needs(_core("pods", "list"))
    async def find_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Pod `name`, if it exists: a list by name, since the operator may list Pods but not get them."""
        listed = await _send(
            self._core.list_namespaced_pod(namespace, field_selector=f"metadata.name={name}", _preload_content=False)
        )
        items = (listed or {}).get("items") or []
        return dict(items[0]) if items else None

    @needs(Permission("", "secrets", "get", tenant=True))
    async def read_opted_in_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret a tenant's spec names for an opt-in feature (a spec.notify signing key, a calendar
        feed URL). Readable only where its owner granted the operator `get` on it (`denied_secret`
        says how); the caller uses its value only if it also carries that feature's label."""
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
        self,
        body: dict[str, Any],
        *,
        type_: str,
        reason: str,
        message: str,
        now: datetime,
        kind: str = KIND,
        count: int = 1,
    ) -> None:
        meta = body["metadata"]
        stamp = format_time(now)
        event = {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": kind,
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

    # -- BotSchedules and their children (runtime/schedules.py) ------------------------------------

    @needs(_ours(PLURAL, "list"))
    async def list_bots(self, namespace: str | None) -> list[dict[str, Any]]:
        """Every ScheduledBot, so that the schedules know their children before their first pass."""
        return await self._list(PLURAL, namespace)

    @needs(_ours(BOT_SCHEDULE.plural, "list"))
    async def list_schedules(self, namespace: str | None) -> list[dict[str, Any]]:
        return await self._list(BOT_SCHEDULE.plural, namespace)

    async def _list(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        """Every object of `plural`; a CRD established a moment ago is waited for as `list_bot_classes` does."""
        for delay in (0.2, 0.5, 1.0, 2.0, 4.0, None):
            if namespace is None:
                call = self._custom.list_cluster_custom_object(GROUP, VERSION, plural, _preload_content=False)
            else:
                call = self._custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, _preload_content=False
                )
            try:
                listed = await _send(call)
            except ApiError as error:
                if error.status != 429 or delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            assert listed is not None
            return list(listed.get("items") or [])
        raise AssertionError("unreachable")

    # A child's ownerReference sets blockOwnerDeletion on its BotSchedule: with the
    # OwnerReferencesPermissionEnforcement plugin that needs update on botschedules/finalizers.
    @needs(_ours(PLURAL, "create"), _ours(f"{BOT_SCHEDULE.plural}/finalizers", "update"))
    async def create_bot(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create a ScheduledBot; the object as written, None when the name is taken (AlreadyExists)."""
        return await _send(
            self._custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body, _preload_content=False
            ),
            missing=(409,),
        )

    @needs(_ours(PLURAL, "patch"))
    async def patch_bot_spec(
        self, namespace: str, name: str, *, uid: str, spec: dict[str, Any], annotations: Mapping[str, str]
    ) -> dict[str, Any] | None:
        """Replace the spec and set these annotations of exactly the ScheduledBot `uid`; None if it is gone.

        A JSON patch whose first operation tests the uid: a bot deleted and created again
        under the same name (by hand, say) is never patched by mistake.
        """
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "replace", "path": "/spec", "value": spec},
        ]
        ops += [
            {"op": "add", "path": "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1"), "value": value}
            for key, value in annotations.items()
        ]
        return await _send(
            self._custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, ops, _content_type=_JSON_PATCH, _preload_content=False
            ),
            missing=(404, 422),
        )

    @needs(_ours(PLURAL, "delete"))
    async def delete_bot(self, namespace: str, name: str, *, uid: str) -> None:
        """Delete exactly the ScheduledBot `uid` (a precondition), if still there."""
        body = {"preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        await _send(
            self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body=body, _preload_content=False
            ),
            missing=(404, 409),
        )

    @needs(_ours(f"{BOT_SCHEDULE.plural}/status", "patch"))
    async def patch_schedule_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch a BotSchedule's `.status`; the object as written, None if it is gone."""
        return await _send(
            self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                BOT_SCHEDULE.plural,
                name,
                {"status": status},
                _content_type=_MERGE,
                _preload_content=False,
            ),
            missing=(404,),
        )

    # The leader election's Lease (runtime/leader.py). Every write is a replace guarded by
    # the resourceVersion of the object read: None means someone else wrote first.
    @needs(_lease("get"))
    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await _send(
            self._coordination.read_namespaced_lease(name, namespace, _preload_content=False), missing=(404,)
        )

    # create cannot be limited to a name in RBAC (the object has none before it exists).
    @needs(_lease("create", named=False))
    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The Lease as created; None when it already exists (another candidate was first)."""
        return await _send(
            self._coordination.create_namespaced_lease(namespace, body, _preload_content=False), missing=(409,)
        )

    @needs(_lease("update"))
    async def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The Lease as written; None on a conflict (changed since read) or when it is gone."""
        return await _send(
            self._coordination.replace_namespaced_lease(name, namespace, body, _preload_content=False),
            missing=(404, 409),
        )

    # The webhook CA that replicas share (runtime/webhook_ca.py), in the operator's namespace.
    @needs(_own_secret("get"))
    async def read_webhook_ca(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await _send(self._core.read_namespaced_secret(name, namespace, _preload_content=False), missing=(404,))

    @needs(_own_secret("create", named=False))
    async def create_webhook_ca(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create it; False when another replica was first."""
        return await _create(self._core.create_namespaced_secret(namespace, body, _preload_content=False))

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


def denied_secret(namespace: str, name: str, error: ApiError) -> str:
    """Why a Secret a spec names could not be read, and, when the operator lacks the right, how its
    owner grants it: the operator holds no Secret read of its own (docs/security.md)."""
    if error.status != 403:
        return f"Secret {namespace}/{name} cannot be read: HTTP {error.status}"
    return (
        f"Secret {namespace}/{name} may not be read by the operator: grant its ServiceAccount get on this "
        f"Secret in {namespace} (a Role with resourceNames: [{name}] and a RoleBinding; docs/security.md)"
    )
