"""The harness's own view of the API server: REST calls and watches, on plain http.client.

Separate from the operator's client on purpose: what the suite records must not depend on
the code under test. Watches run in threads and survive a frozen or restarted API server
(the socket waits; a broken stream is listed again and resumed), so every Pod a bot ever
had and every state it went through is seen, however the control plane is abused.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from localcluster.kubeapi import load_kubeconfig

Obj = dict[str, Any]
GROUP_PATH: Final = "/apis/meetingbots.dev/v1alpha1"
#: Long enough to outlast a frozen API server; a watch then resumes where it was.
_SOCKET_TIMEOUT: Final = 120.0


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message[:300]}")
        self.status = status


class Kube:
    """REST calls with the kubeconfig's identity; one connection per call, or prepared ahead."""

    def __init__(self, kubeconfig: Path) -> None:
        server, self.context = load_kubeconfig(kubeconfig)
        parsed = urllib.parse.urlsplit(server)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 443

    def connection(self, timeout: float = 30) -> http.client.HTTPSConnection:
        """A connection already through TLS: a request sent on it leaves at once."""
        connection = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)
        connection.connect()
        return connection

    def call(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        *,
        content_type: str = "application/json",
        connection: http.client.HTTPSConnection | None = None,
        timeout: float = 30,
    ) -> Obj:
        own = connection is None
        conn = connection or self.connection(timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": content_type})
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
        finally:
            if own:
                conn.close()
        if response.status >= 300:
            raise ApiError(response.status, text)
        result = json.loads(text) if text else {}
        return result if isinstance(result, dict) else {}

    def patch(self, path: str, patch: Obj) -> Obj:
        return self.call("PATCH", path, patch, content_type="application/merge-patch+json")

    def stream(self, path: str, params: dict[str, str]) -> Iterator[Obj]:
        """The events of one watch request, until the server ends it."""
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=_SOCKET_TIMEOUT)
        try:
            conn.request("GET", f"{path}?{urllib.parse.urlencode(params)}")
            response = conn.getresponse()
            if response.status != 200:
                raise ApiError(response.status, response.read().decode(errors="replace"))
            for line in response:
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()


def bots_path(namespace: str, name: str = "") -> str:
    return f"{GROUP_PATH}/namespaces/{namespace}/scheduledbots" + (f"/{name}" if name else "")


def pods_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/pods" + (f"/{name}" if name else "")


class Watcher:
    """Lists and watches one collection in a thread; `on_event(type, obj, seen_at)` for every change.

    After a broken stream (a restarted API server, an expired resourceVersion) it lists again
    and reports the objects that vanished meanwhile as DELETED, so nothing is lost to the gap.
    """

    def __init__(self, kube: Kube, path: str, on_event: Callable[[str, Obj, float], None]) -> None:
        self._kube, self._path, self._on_event = kube, path, on_event
        self._stop = threading.Event()
        self._known: dict[str, Obj] = {}
        self._thread = threading.Thread(target=self._run, name=f"watch {path}", daemon=True)
        self.synced = threading.Event()

    def start(self) -> None:
        self._thread.start()
        if not self.synced.wait(30):
            raise TimeoutError(f"could not list {self._path} within 30 s")

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self._relist()
                self.synced.set()
                params = {"watch": "1", "resourceVersion": version, "timeoutSeconds": "30", "allowWatchBookmarks": "1"}
                for event in self._kube.stream(self._path, params):
                    if self._stop.is_set():
                        return
                    self._handle(event["type"], event["object"])
            except (OSError, ApiError, ValueError, http.client.HTTPException):
                # The API server is restarting or gone for a moment: list again shortly.
                self._stop.wait(0.5)

    def _relist(self) -> str:
        listing = self._kube.call("GET", self._path)
        seen = {item["metadata"]["name"]: item for item in listing.get("items", [])}
        now = time.time()
        for name in set(self._known) - set(seen):
            self._on_event("DELETED", self._known.pop(name), now)
        for item in seen.values():
            self._handle("MODIFIED", item)
        return str(listing["metadata"]["resourceVersion"])

    def _handle(self, kind: str, obj: Obj) -> None:
        if kind == "BOOKMARK":
            return
        if kind == "ERROR":
            raise ApiError(int(obj.get("code", 0)), str(obj.get("message")))
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self._known.pop(name, None)
        else:
            self._known[name] = obj
        self._on_event(kind, obj, time.time())
