"""A join line: its answer when the line is closed while it is being read, and a write the kernel takes in parts.

The engine disarms a bot's join (which closes its line) as soon as the bot's state
says it joined; a late join's answer may be on its way at that moment, already
received but not yet read. Found on a real node: the restarted operator's late signal
raced the bot's own safety net.
"""

from __future__ import annotations

import asyncio
import json

from scheduledbot.adapters.bots import JoinLine


class _Writer:
    """The write side of the line: only closing matters here."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def test_an_answer_received_before_the_line_is_closed_is_still_read() -> None:
    line = JoinLine(
        address="127.0.0.1:8181",
        token="t",
        request_id="r",
        meeting_url="https://zoom.us/j/1",
        bot_name="B",
        join_at="x",
    )
    reader = asyncio.StreamReader()
    # The streams of an opened line, without a socket: the test decides when bytes arrive.
    line._reader, line._writer = reader, _Writer()  # type: ignore[assignment]
    answering = asyncio.create_task(line.answer())
    await asyncio.sleep(0)  # the answer now waits for the response's head
    body = json.dumps({"version": 3, "state": "joined", "joinedBy": "deadline"}).encode()
    reader.feed_data(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    line.close()  # the engine disarms in the same turn of the loop, before the answer resumes
    report = await answering
    assert (report.version, report.state, report.joined_by) == (3, "joined", "deadline")


async def test_a_request_the_kernel_does_not_take_at_once_arrives_whole() -> None:
    """The instant's write goes straight to the socket; what it leaves, the line's loop sends."""
    gate = asyncio.Event()
    received: list[bytes] = []

    async def bot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await gate.wait()  # reads nothing until the write is over: the kernel's buffers fill
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        received.append(await reader.readexactly(length))
        body = json.dumps({"version": 2, "state": "joining", "joinedBy": "signal"}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(bot, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    line = JoinLine(
        address=f"127.0.0.1:{port}",
        token="t",
        request_id="r",
        meeting_url="https://zoom.us/j/" + "1" * (8 << 20),  # far more than loopback buffers hold
        bot_name="B",
        join_at="x",
    )
    await line.open()
    line.write()
    gate.set()
    report = await line.answer()
    assert report.state == "joining"
    assert len(received) == 1 and json.loads(received[0])["meetingUrl"].endswith("1" * 100)
    assert len(received[0]) + line.request.index(b"\r\n\r\n") + 4 == len(line.request)
    server.close()
    await server.wait_closed()
