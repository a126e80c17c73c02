"""The baseline: how a straightforward asyncio operator would send a thousand joins at once.

Run as `python -m bench.naive --join-at EPOCH --addresses FILE` (a separate process, as
the operator is). One aiohttp `ClientSession`; its connections to every bot are opened
beforehand (one `GET /v1/ready` each, kept alive in the session's pool, as an operator
that reuses its connections would have them); then one asyncio task per bot sleeps
until `joinAt` and sends its `POST /v1/join` through the session. Nothing else: no
pre-built requests, no shared timer, no spinning.

Prints `{"ready": ...}` once the connections are open, then, when every join has been
answered (or has failed), one JSON line with each task's wake-up and send times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from datetime import UTC, datetime

import aiohttp


async def run(addresses: list[str], join_at: float, timeout: float) -> dict[str, object]:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=600)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def warm(address: str) -> bool:
            try:
                async with session.get(f"http://{address}/v1/ready", timeout=aiohttp.ClientTimeout(total=10)) as r:
                    await r.read()
                    return r.status == 200
            except (TimeoutError, aiohttp.ClientError):
                return False

        warmed = await asyncio.gather(*(warm(a) for a in addresses))
        sys.stdout.write(json.dumps({"ready": True, "warm": sum(warmed), "late_start": time.time() > join_at}) + "\n")
        sys.stdout.flush()
        stamp = datetime.fromtimestamp(join_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

        async def join(index: int, address: str) -> dict[str, object]:
            await asyncio.sleep(join_at - time.time())
            woke = time.time()
            body = {
                "requestId": f"naive-{index}@{stamp}",
                "meetingUrl": "https://zoom.us/j/1",
                "botName": f"naive {index}",
                "joinAt": stamp,
            }
            try:
                async with session.post(
                    f"http://{address}/v1/join",
                    json=body,
                    headers={"Authorization": "Bearer naive"},
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response:
                    await response.read()
                    return {"address": address, "woke": woke, "answered": time.time(), "status": response.status}
            except (TimeoutError, aiohttp.ClientError) as error:
                return {"address": address, "woke": woke, "answered": time.time(), "error": repr(error)}

        results = await asyncio.gather(*(join(i, a) for i, a in enumerate(addresses)))
    return {"results": results, "warm": sum(warmed)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive")
    parser.add_argument("--join-at", type=float, required=True, help="epoch seconds")
    parser.add_argument("--addresses", required=True, help="file: JSON list of host:port")
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(args.addresses) as f:
        addresses = json.load(f)
    out = asyncio.run(run(addresses, args.join_at, args.timeout))
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
