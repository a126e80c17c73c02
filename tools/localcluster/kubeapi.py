"""The few Kubernetes API calls the fake kubelet makes, over aiohttp.

Why not kubernetes_asyncio: the kubelet handles raw JSON anyway (it writes
status as merge patches and copies fields around), and building model objects
for every watch event of hundreds of Pods costs more CPU than everything else
it does.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml

from localcluster.podspec import Obj

ATTEMPTS: Final = 5
TRANSIENT: Final = (429, 500, 503, 504)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def load_kubeconfig(path: Path) -> tuple[str, ssl.SSLContext]:
    """Server URL and a TLS context from the current context of a kubeconfig."""
    config = yaml.safe_load(path.read_text())
    context_name = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])

    def pem(kind: str) -> bytes:
        if f"{kind}-data" in user or f"{kind}-data" in cluster:
            data: str = user.get(f"{kind}-data") or cluster[f"{kind}-data"]
            return base64.b64decode(data)
        source: str = user.get(kind) or cluster[kind]
        return (path.parent / source).read_bytes()

    ssl_context = ssl.create_default_context(cadata=pem("certificate-authority").decode())
    # load_cert_chain reads files only; the key never outlives this block.
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "cert"), Path(tmp, "key")
        cert.write_bytes(pem("client-certificate"))
        key.write_bytes(pem("client-key"))
        ssl_context.load_cert_chain(cert, key)
    return cluster["server"], ssl_context


class Api:
    """The few REST calls the kubelet makes, on one pooled HTTPS session."""

    def __init__(self, server: str, ssl_context: ssl.SSLContext) -> None:
        self.server = server
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context, limit=32),
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Obj | None = None,
        patch: str | None = None,
    ) -> Obj:
        headers = {"Content-Type": f"application/{patch}+json" if patch else "application/json"}
        async with self.session.request(
            method, self.server + path, data=json.dumps(body) if body is not None else None, headers=headers
        ) as response:
            text = await response.text()
            try:
                result = json.loads(text)
            except ValueError:
                result = text
            if response.status not in (200, 201):
                raise ApiError(response.status, result)
            return result if isinstance(result, dict) else {}

    async def call_retrying(self, method: str, path: str, **kwargs: Any) -> Obj | None:
        """`call`, retried on transient failures; None when the object is gone."""
        for attempt in range(ATTEMPTS):
            try:
                return await self.call(method, path, **kwargs)
            except ApiError as error:
                if error.status in (404, 409):
                    return None
                if error.status not in TRANSIENT or attempt == ATTEMPTS - 1:
                    raise
            except (aiohttp.ClientError, TimeoutError):
                if attempt == ATTEMPTS - 1:
                    raise
            await asyncio.sleep(0.2 * 2**attempt)
        return None

    async def watch(self, path: str, resource_version: str) -> AsyncIterator[Obj]:
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "600",
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=660)
        async with self.session.get(self.server + path, params=params, timeout=timeout) as response:
            if response.status != 200:
                raise ApiError(response.status, await response.text())
            # Not `async for line in response.content`: its line length limit
            # is below the size of a Pod with large managedFields.
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)

    async def close(self) -> None:
        await self.session.close()
