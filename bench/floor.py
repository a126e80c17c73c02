"""The measurement floor: how late the stub stamps bytes that left another process on time.

Run as `python -m bench.floor --address HOST:PORT`: one connection, opened beforehand;
`--count` times, a pre-built `POST /bench/ping` is written at a chosen instant (reached by
sleeping, then spinning on the wall clock) and the send time is recorded just before the
write. The stub stamps each ping as it stamps joins. Arrival - send is what any lateness
"at the bot" includes even for a signal sent exactly on time: loopback delivery plus the
stub's own wake-up, on this machine, under its current load.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--address", required=True)
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args(argv)
    host, _, port = args.address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent = []
    for i in range(args.count):
        body = json.dumps({"requestId": f"floor-{i}"}).encode()
        request = (
            f"POST /bench/ping HTTP/1.1\r\nHost: {args.address}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        at = time.time() + args.interval
        time.sleep(max(0.0, at - time.time() - 0.002))
        while time.time() < at:
            pass
        t = time.time()
        sock.sendall(request)
        sent.append((f"floor-{i}", t))
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    sock.close()
    sys.stdout.write(json.dumps({"sent": sent}) + "\n")


if __name__ == "__main__":
    main()
