"""The harness's side of the API server: bulk creates, watches, apiserver metrics.

Everything goes through one `kubernetes_asyncio` ApiClient with raw JSON
(`_preload_content=False`): the generated models would cost more CPU than the
requests, and this process shares two cores with the API server and the operator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger("bench")

GROUP, VERSION, PLURAL = "meetingbots.dev", "v1alpha1", "scheduledbots"


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    @classmethod
    async def connect(cls, kubeconfig: Path, *, pool: int = 128) -> Kube:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = pool
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        await self.api.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str | None = None,
        timeout: float = 30,
    ) -> Any:
        """One request; the parsed JSON answer (ApiException on an error status)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        response = await self.api.call_api(
            path,
            method,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
        data = await response.read()
        if not 200 <= response.status <= 299:
            # With _preload_content=False the client does not raise by itself.
            raise ApiException(status=response.status, reason=f"{method} {path}: {data[:300]!r}")
        return json.loads(data) if data else None

    async def raw(self, path: str, *, timeout: float = 30) -> str:
        response = await self.api.call_api(
            path,
            "GET",
            header_params={"Accept": "text/plain"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
        data: bytes = await response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(status=response.status, reason=f"GET {path}: {data[:300]!r}")
        return data.decode()

    # Namespaces ------------------------------------------------------------------------

    async def create_namespace(self, name: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "scheduledbot-bench"}},
        }
        await self.call("POST", "/api/v1/namespaces", body=body)
        # Pod admission needs the namespace's default ServiceAccount (the controller makes it).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                await self.call("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")
                return
            except ApiException:
                await asyncio.sleep(0.2)
        raise TimeoutError(f"namespace {name}: no default ServiceAccount after 30 s")

    async def delete_namespace(self, name: str, *, timeout: float) -> float | None:
        """Delete and wait until it is gone; seconds taken, or None on timeout."""
        started = time.monotonic()
        try:
            await self.call("DELETE", f"/api/v1/namespaces/{name}")
        except ApiException as error:
            if error.status == 404:
                return 0.0
            raise
        while time.monotonic() - started < timeout:
            try:
                await self.call("GET", f"/api/v1/namespaces/{name}")
            except ApiException as error:
                if error.status == 404:
                    return time.monotonic() - started
                raise
            await asyncio.sleep(1)
        return None

    # ScheduledBots -----------------------------------------------------------------------

    def bots_path(self, namespace: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"

    async def create_bots(self, namespace: str, bodies: list[dict[str, Any]], *, concurrency: int) -> dict[str, float]:
        """Create all, `concurrency` in flight; returns name -> time.time() when its create returned."""
        path = self.bots_path(namespace)
        returned: dict[str, float] = {}
        queue = iter(bodies)

        async def worker() -> None:
            for body in queue:
                for attempt in range(5):
                    try:
                        await self.call("POST", path, body=body)
                        break
                    except ApiException as error:
                        if error.status == 409:
                            break
                        if error.status not in (429, 500, 503, 504) or attempt == 4:
                            raise
                        await asyncio.sleep(0.2 * (attempt + 1))
                returned[body["metadata"]["name"]] = time.time()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return returned

    async def delete_each(self, path: str, names: list[str], *, concurrency: int = 16, attempts: int = 5) -> int:
        """Delete the named objects of one collection, `concurrency` at a time; how many failed.

        One request per object, not a delete-collection: at 5,000 Pods one collection
        delete outlives the API server's request timeout (504) and leaves the run without
        its table. 404 counts as done; timeouts, 429 and 5xx are retried with a growing pause.
        """
        queue = iter(names)
        failed = 0

        async def worker() -> None:
            nonlocal failed
            for name in queue:
                for attempt in range(attempts):
                    try:
                        await self.call("DELETE", f"{path}/{name}", timeout=60)
                        break
                    except ApiException as error:
                        if error.status == 404:
                            break
                        retry = error.status in (429, 500, 503, 504)
                    except (TimeoutError, OSError):
                        retry = True
                    if not retry or attempt == attempts - 1:
                        failed += 1
                        log.warning("could not delete %s/%s", path, name)
                        break
                    await asyncio.sleep(0.5 * (attempt + 1))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return failed

    async def names(self, path: str, *, label_selector: str = "") -> list[str]:
        query = [("labelSelector", label_selector)] if label_selector else []
        return [item["metadata"]["name"] for item in await self.list(path, query)]

    async def list(self, path: str, query: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            params = [*(query or []), ("limit", "2000")] + ([("continue", token)] if token else [])
            page = await self.call("GET", path, query=params, timeout=120)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items

    # apiserver metrics -------------------------------------------------------------------

    async def request_counts(self) -> Counter[tuple[str, str, str, str]]:
        """apiserver_request_total summed over codes: (verb, group, resource, subresource) -> count."""
        counts: Counter[tuple[str, str, str, str]] = Counter()
        for line in (await self.raw("/metrics", timeout=60)).splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels_text, _, value = line[len("apiserver_request_total{") :].rpartition("} ")
            labels = dict(part.split("=", 1) for part in _split_labels(labels_text))
            if labels.get("dry_run", '""') != '""':
                continue
            key = tuple(labels.get(k, '""').strip('"') for k in ("verb", "group", "resource", "subresource"))
            counts[key] += int(float(value))  # type: ignore[index]
        return counts


def _split_labels(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return parts


class Watcher:
    """List then watch one collection; keeps each object's latest version and when things were first seen.

    `on_event(kind, obj, previous)` runs for every event (cheap, synchronous). Waits are
    on counters kept up to date by the event callback, never on scans of all objects.
    """

    def __init__(
        self,
        kube: Kube,
        path: str,
        *,
        label_selector: str = "",
        on_event: Callable[[str, dict[str, Any], dict[str, Any] | None], None] | None = None,
    ) -> None:
        self.kube = kube
        self.path = path
        self.label_selector = label_selector
        self.on_event = on_event
        self.objects: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        version = ""
        while True:
            try:
                if not version:
                    page = await self.kube.call(
                        "GET", self.path, query=[("labelSelector", self.label_selector)], timeout=120
                    )
                    for obj in page.get("items") or []:
                        self._apply("ADDED", obj)
                    version = page["metadata"]["resourceVersion"]
                    self.synced.set()
                query = [
                    ("watch", "true"),
                    ("resourceVersion", version),
                    ("allowWatchBookmarks", "true"),
                    ("timeoutSeconds", "300"),
                    ("labelSelector", self.label_selector),
                ]
                response = await self.kube.api.call_api(
                    self.path,
                    "GET",
                    query_params=query,
                    header_params={"Accept": "application/json"},
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _request_timeout=330,
                )
                if response.status != 200:
                    raise ApiException(status=response.status, reason=f"watch {self.path}")
                async for line in response.content:
                    event = json.loads(line)
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        version = ""  # 410 Gone: list again
                        break
                    version = obj["metadata"].get("resourceVersion") or version
                    if kind != "BOOKMARK":
                        self._apply(kind, obj)
                response.release()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a broken watch: list again after a moment
                log.warning("watch %s: %r; listing again", self.path, error)
                version = ""
                await asyncio.sleep(0.5)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        previous = self.objects.get(name)
        if kind == "DELETED":
            self.objects.pop(name, None)
        else:
            self.objects[name] = obj
        if self.on_event is not None:
            self.on_event(kind, obj, previous)
        self.changed.set()

    async def wait(self, condition: Callable[[], bool], *, timeout: float) -> bool:
        """Until `condition()` holds (checked after each batch of events), at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=min(left, 1.0))
            except TimeoutError:
                pass
        return True
