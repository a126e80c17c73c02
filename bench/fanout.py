"""The fan-out alone: `python -m bench.fanout --sizes 1000,5000 --runs 3 [--writers 1,2]`.

The join instant's writes without the operator around them: N bots share one
`joinAt`, each a `JoinLine` armed on a real `DispatcherThread`, which writes the
batch at the instant as the operator does. `--writers 1,2` runs each round once per
writer-thread count, one after the other: side by side in one run.

The bots are one receiver in a separate process: one loopback listener, N accepted
connections with SO_TIMESTAMPNS on, each one's first bytes read with `recvmsg` and
stamped by the KERNEL on arrival (not when the receiver gets to them). Lateness =
that stamp - `joinAt`. A run is flagged when the receiver had not accepted every
connection before the quiet window (the lines would not all be ready). Every wait
is on a condition (a message of the receiver, a timeout as its bound); each round
is bounded by `--round-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import resource
import selectors
import socket
import struct
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.stats import fmt_ms, summary
from scheduledbot.adapters.bots import JoinLine
from scheduledbot.runtime.dispatch_thread import QUIET_AHEAD, DispatcherThread

#: Linux's SO_TIMESTAMPNS (== SCM_TIMESTAMPNS); Python does not name it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def _more_files() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def receive(conn: multiprocessing.connection.Connection, count: int, seconds: float) -> None:
    """The receiver process: accept `count` connections, stamp each one's first bytes."""
    _more_files()
    deadline = time.monotonic() + seconds
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    conn.send(listener.getsockname()[1])
    accepted: list[socket.socket] = []
    try:
        while len(accepted) < count:
            listener.settimeout(max(0.001, deadline - time.monotonic()))
            sock, _ = listener.accept()
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setblocking(False)
            accepted.append(sock)
    except TimeoutError:
        pass
    conn.send(("accepted", len(accepted), time.time()))
    stamps: list[float] = []
    with selectors.DefaultSelector() as selector:
        for sock in accepted:
            selector.register(sock, selectors.EVENT_READ)
        while len(stamps) < len(accepted) and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                sock = key.fileobj  # type: ignore[assignment]
                _, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(16))
                for level, kind, data in ancillary:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", data[:16])
                        stamps.append(sec + nsec / 1e9)
                selector.unregister(sock)  # the first bytes only
    conn.send(("stamps", stamps))
    conn.poll(max(0.0, deadline - time.monotonic()))  # the parent's "done": then the sockets close
    for sock in accepted:
        sock.close()


async def _message(conn: multiprocessing.connection.Connection, timeout: float) -> Any:
    if not await asyncio.to_thread(conn.poll, timeout):
        raise TimeoutError("the receiver did not answer in time")
    return conn.recv()


async def one_round(count: int, seconds: float, writers: int | None) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    conn, child = ctx.Pipe()
    process = ctx.Process(target=receive, args=(child, count, seconds), daemon=True)
    process.start()
    lags: list[float] = []
    dispatcher: DispatcherThread[int] | None = None
    try:
        port = await _message(conn, 30)
        dispatcher = DispatcherThread(
            report=lambda key, outcome: None,
            lag=lambda loop, late: lags.append(late) if loop == "dispatcher" else None,
            writers=writers,
        )
        # Room to open every connection before the quiet window: ~0.3 ms each on this machine,
        # several times that under load.
        join_at = datetime.now(UTC) + timedelta(seconds=QUIET_AHEAD + 1.0 + count * 0.001)
        for i in range(count):
            line = JoinLine(
                address=f"127.0.0.1:{port}",
                token="bench",
                request_id=f"r{i}",
                meeting_url="https://zoom.us/j/1",
                bot_name=f"Bot {i}",
                join_at=join_at.isoformat(),
            )
            dispatcher.arm(i, join_at=join_at, not_before=None, line=line, request_id=f"r{i}")
        _, accepted, accepted_at = await _message(conn, seconds)
        _, stamps = await _message(conn, seconds)
    finally:
        if dispatcher is not None:
            await dispatcher.close()
        conn.send("done")
        await asyncio.to_thread(process.join, 10)
        if process.is_alive():
            process.kill()
    instant = join_at.timestamp()
    return {
        "n": len(stamps),
        "ready": accepted == count and accepted_at < instant - QUIET_AHEAD,
        "late": summary([stamp - instant for stamp in stamps]),
        "lag": lags[0] if lags else float("nan"),
    }


async def main_async(sizes: list[int], runs: int, seconds: float, writers: list[int | None]) -> None:
    print("# lateness at the receiver (kernel stamp - joinAt), ms", flush=True)
    print("size  run  writers  n     p50     p99     max     dispatcher-lag  all-ready", flush=True)
    for size in sizes:
        for run in range(runs):
            for count in writers:
                result = await one_round(size, seconds, count)
                late = result["late"]
                print(
                    f"{size:<5} {run + 1:<4} {count or 'default':<8} {result['n']:<5} {fmt_ms(late['p50']):>7} "
                    f"{fmt_ms(late['p99']):>7} {fmt_ms(late['max']):>7} {fmt_ms(result['lag'], 2):>15}  "
                    f"{'yes' if result['ready'] else 'NO'}",
                    flush=True,
                )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000", help="bots on one joinAt, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--round-seconds", type=float, default=30.0, help="bound of one round")
    parser.add_argument(
        "--writers", help="threads writing the batch, comma-separated, each in turn (default: the operator's)"
    )
    args = parser.parse_args(argv)
    _more_files()
    sizes = [int(size) for size in args.sizes.split(",")]
    writers: list[int | None] = [int(w) for w in args.writers.split(",")] if args.writers else [None]
    asyncio.run(main_async(sizes, args.runs, args.round_seconds, writers))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
