"""What the local HTTP servers (meeting, ICS, webhook receiver) share, in-process and as subprocesses.

:class:`AppServer` runs one's aiohttp application in the caller's event loop. Each
also runs as ``python -m localcluster.<module> --host H --port 0``: :func:`serve` starts
the server, prints its base URL as the first line on stdout and runs it until
SIGTERM/SIGINT; :class:`ServerProcess` starts such a process for tests whose event loop
must not host the server, reads that line, and stops the process. :func:`long_poll` is how
the meeting server and the receiver hold a request until what it waits for happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import selectors
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, ClassVar, Self

from aiohttp import web


class AppServer:
    """An aiohttp application served on `host`:`port` (0 picks a free port): ``async with Sub() as server``.

    A subclass builds its application and hands its runner over.
    """

    def __init__(self, runner: web.AppRunner, *, host: str, port: int) -> None:
        self._runner = runner
        self._host = host
        self._port = port

    async def start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return int(self._runner.addresses[0][1])

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"


async def long_poll(done: Callable[[], bool], changed: Callable[[], asyncio.Event], *, timeout: float) -> None:
    """Until `done()` holds, for at most `timeout` seconds: a long-poll's wait.

    `changed()` is the event the server sets, and replaces with a fresh one, at each change;
    it is read anew before each wait, as the one already set would end the wait at once.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while not done():
        event = changed()
        try:
            async with asyncio.timeout_at(deadline):
                await event.wait()
        except TimeoutError:
            break


async def serve(
    make: Callable[[], AppServer], *, port_file: pathlib.Path | None = None, also_print: Iterable[str] = ()
) -> None:
    """Start the server `make` builds, announce it, and run it until SIGTERM or SIGINT.

    The announcement: the port in `port_file` (if given), then the base URL and
    `also_print` on stdout, a line each.
    """
    server = make()
    await server.start()
    if port_file is not None:
        # Write then rename: a reader never sees a half-written port.
        partial = port_file.with_name(port_file.name + ".tmp")
        partial.write_text(f"{server.port}\n")
        partial.replace(port_file)
    print(server.base_url, flush=True)
    for line in also_print:
        print(line, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


class ServerProcess:
    """A server module run as a subprocess (``with Sub() as server: server.base_url``).

    A subclass names the module to run and what to call it in errors.
    """

    module: ClassVar[str]
    what: ClassVar[str]

    def __init__(
        self, *, host: str = "127.0.0.1", startup_timeout: float = 10.0, env: Mapping[str, str] | None = None
    ) -> None:
        self._host = host
        self._startup_timeout = startup_timeout
        self._extra_env = dict(env or {})
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def start(self) -> None:
        tools_dir = str(pathlib.Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tools_dir, env.get("PYTHONPATH")]))
        env.update(self._extra_env)
        self._process = subprocess.Popen(
            [sys.executable, "-m", self.module, "--host", self._host, "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self._process.stdout is not None  # stdout=PIPE
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            ready = selector.select(self._startup_timeout)
        line = self._process.stdout.readline().strip() if ready else ""
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"{self.what} did not start within {self._startup_timeout:g} s")
        self.base_url = line

    def call(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> Any:
        """A JSON request to the server's admin API; its JSON answer (None for an empty one)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
