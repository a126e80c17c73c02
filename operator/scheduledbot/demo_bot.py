"""The demo bot: "joins" a meeting of the local meeting server over HTTP.

``python -m scheduledbot.demo_bot`` is the default command of the operator's
bot Pods. It is a Python bot on :mod:`scheduledbot.agent` (it serves the
control API itself), and it behaves like a real one, against the protocol of
``tools/localcluster/meeting.py``:

1. ``prepare()`` stands for a real bot's warm-up (a browser launch): it takes
   ``warmupSeconds`` (BOT_CONFIG, default 0); the Pod is ready after it.
2. ``join()`` arrives with a single ``POST <MEETING_URL>`` (the server stamps
   that request: it is the bot's punctuality), reports ``waiting_room`` while
   not admitted, then ``joined``, then ``recording`` ``recordingDelaySeconds``
   later (BOT_CONFIG, default 1).
3. It learns that it was admitted or that the meeting ended from a long-poll
   on its participant document, and leaves (``DELETE`` its participant) when
   asked: the leave call, SIGTERM, or the maximum duration.

Failures: the meeting server unreachable at the arrival -> ``failed`` with
reason ``JoinFailed`` after a few quick retries (the join must be on time or
not at all); refused (4xx, e.g. the meeting ended) -> ``JoinRefused``; lost
during the meeting for longer than the retries -> ``MeetingUnreachable``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping
from typing import Any, Final

import aiohttp

from scheduledbot.agent import AgentSettings, Bot, BotFailure, Meeting, SettingsError, run_bot

logger = logging.getLogger(__name__)

DEFAULT_BOT_NAME: Final = "Scheduled Bot"
DEFAULT_RECORDING_DELAY_SECONDS: Final = 1.0
#: The meeting server's long-poll limit is 60 s; 30 s stays well inside any proxy's idle timeout.
LONG_POLL_SECONDS: Final = 30.0
#: Back-off between attempts when the meeting server cannot be reached. Short on
#: purpose: a join retried for minutes is a missed join, better reported as failed.
RETRY_DELAYS_SECONDS: Final = (0.2, 0.5, 1.0, 2.0)


class DemoBot(Bot):
    """Joins a local meeting server's meeting; see the module docstring."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self._warmup = _seconds(config or {}, "warmupSeconds", 0.0)

    async def prepare(self) -> None:
        await asyncio.sleep(self._warmup)

    async def join(self, meeting: Meeting) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=LONG_POLL_SECONDS + 10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await self._attend(session, meeting)

    async def _attend(self, session: aiohttp.ClientSession, meeting: Meeting) -> None:
        participant = await self._arrive(session, meeting)
        participant_url = f"{meeting.url}/participants/{participant['participantId']}"
        recording_delay = _seconds(meeting.config, "recordingDelaySeconds", DEFAULT_RECORDING_DELAY_SECONDS)
        recording: asyncio.Task[bool] | None = None
        leave = asyncio.create_task(self.leave_requested.wait())
        try:
            while True:
                status = participant["status"]
                if status == "waiting":
                    await self.reporter.report("waiting_room", "waiting for the host to admit me")
                elif status == "admitted" and recording is None:
                    await self.reporter.report("joined", f"in {meeting.url} as {participant['name']}")
                    recording = asyncio.create_task(self._start_recording(recording_delay))
                elif status == "ended":
                    await self.reporter.report("ended", "the meeting ended", reason="MeetingEnded")
                    return
                elif status == "left":
                    return
                poll = asyncio.create_task(self._poll(session, participant_url, participant["version"]))
                await asyncio.wait([poll, leave], return_when=asyncio.FIRST_COMPLETED)
                if leave.done():
                    poll.cancel()
                    await asyncio.gather(poll, return_exceptions=True)
                    await self._depart(session, participant_url)
                    return
                participant = poll.result()
        finally:
            for task in (leave, recording):
                if task is not None:
                    task.cancel()

    async def _arrive(self, session: aiohttp.ClientSession, meeting: Meeting) -> dict[str, Any]:
        name = meeting.bot_name or DEFAULT_BOT_NAME
        for attempt, delay in enumerate((*RETRY_DELAYS_SECONDS, None), start=1):
            try:
                async with session.post(meeting.url, json={"name": name}) as response:
                    body: dict[str, Any] = await response.json(content_type=None)
                    if response.status == 201:
                        logger.info("Arrived in %s as %s (%s).", meeting.url, name, body["status"])
                        return body
                    raise BotFailure(
                        "JoinRefused",
                        f"the meeting refused the join: {response.status} {body.get('error', '')}".rstrip(),
                    )
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                if delay is None or self.leave_requested.is_set():
                    raise BotFailure(
                        "JoinFailed", f"cannot reach {meeting.url} after {attempt} attempts: {exc!r}"
                    ) from None
                logger.warning("Cannot reach %s (%r); retrying in %g s.", meeting.url, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _poll(self, session: aiohttp.ClientSession, url: str, after: int) -> dict[str, Any]:
        """The participant document once it changes (a long-poll, re-issued on its timeout)."""
        failures = 0
        while True:
            try:
                async with session.get(url, params={"after": after, "timeout": LONG_POLL_SECONDS}) as response:
                    response.raise_for_status()
                    document: dict[str, Any] = await response.json()
                failures = 0
                if document["version"] > after:
                    return document
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                if failures == len(RETRY_DELAYS_SECONDS):
                    raise BotFailure("MeetingUnreachable", f"lost the meeting server: {exc!r}") from None
                logger.warning("Lost the meeting server (%r); retrying in %g s.", exc, RETRY_DELAYS_SECONDS[failures])
                await asyncio.sleep(RETRY_DELAYS_SECONDS[failures])
                failures += 1

    async def _depart(self, session: aiohttp.ClientSession, url: str) -> None:
        try:
            async with session.delete(url) as response:
                response.raise_for_status()
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Leaving anyway: the Pod is going; only the record of the departure is lost.
            logger.warning("Could not say goodbye to the meeting server: %r", exc)
        else:
            logger.info("Left the meeting.")

    async def _start_recording(self, delay: float) -> bool:
        await asyncio.sleep(delay)
        return await self.reporter.report("recording", "recording the meeting")


def _seconds(config: Mapping[str, Any], key: str, default: float) -> float:
    value = config.get(key, default)
    return float(value) if isinstance(value, (int, float)) and value >= 0 else default


def main() -> int:
    try:
        settings = AgentSettings.from_env()
    except SettingsError as exc:
        print(f"demo_bot: {exc}", file=sys.stderr)
        return 2
    return run_bot(DemoBot(settings.bot_config), settings)


if __name__ == "__main__":
    sys.exit(main())
