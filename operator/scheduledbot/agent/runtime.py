"""The agent: runs a :class:`~scheduledbot.agent.bot.Bot` behind the control API.

What it adds around the bot
===========================

* **The control API** (:mod:`scheduledbot.agent.server`), up before warm-up
  starts so that readiness can answer 503 while ``prepare()`` runs.
* **The safety net.** The Pod knows ``JOIN_AT``; if no join signal came by
  ``JOIN_AT + BOT_SELF_JOIN_DELAY_SECONDS`` it joins on its own
  (``joinedBy: deadline``). If even that instant is past
  ``JOIN_AT + JOIN_DEADLINE_SECONDS`` it reports ``failed``/``Missed`` instead.
  The wake-up is one timer computed from the wall clock (``JOIN_AT`` is wall
  time); nothing polls. When the timer fires it re-reads the clock and
  re-arms if it fired early, because the loop's monotonic clock and the wall
  clock can drift apart over a long staging lead (NTP slews).
* **Max duration.** ``MAX_DURATION_SECONDS`` after the join started (waiting
  room included: it is time the bot holds a seat) the agent leaves.
* **SIGTERM.** Kubernetes sends it when the Pod is deleted; the agent leaves
  the meeting gracefully and exits. This is how a bot leaves even when the
  operator is down at deletion. SIGINT does the same; a second SIGINT exits
  at once.
* **Exit.** After ``ended``/``failed`` the agent keeps serving until that final
  document has been read once by an authenticated caller (the operator), or
  for ``linger`` seconds, then exits 0 (ended) or 1 (failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Final, Literal

from scheduledbot import protocol as p
from scheduledbot.agent.bot import Bot, BotFailure, Meeting, StateReporter
from scheduledbot.agent.server import ControlServer, idle_timeout_for
from scheduledbot.agent.settings import AgentSettings, SettingsError
from scheduledbot.agent.state import StateHolder
from scheduledbot.protocol import JoinRequest, StateDoc

logger = logging.getLogger(__name__)

#: A timer that fires less than this early is on time (the loop's clock resolution).
_EARLY_TOLERANCE_SECONDS: Final = 0.001


def self_join_plan(
    *, join_at: float, delay: float, deadline: float | None, now: float
) -> tuple[Literal["join", "miss"], float]:
    """What the safety net does if no join signal comes, and at which wall-clock instant.

    ``join`` at ``join_at + delay``; but ``miss`` at ``join_at + deadline`` if that
    comes first, or if it is already past (a Pod that started too late must not
    join a meeting its user has given up on).
    """
    join_time = join_at + delay
    if deadline is None:
        return "join", join_time
    miss_time = join_at + deadline
    if join_time > miss_time or now > miss_time:
        return "miss", miss_time
    return "join", join_time


class Agent:
    """Serves the control API for one bot and drives it through one meeting."""

    def __init__(self, bot: Bot, settings: AgentSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._bot = bot
        self._settings = settings
        self._clock = clock
        self._state = StateHolder(clock=clock)
        idle = idle_timeout_for(join_at=settings.join_at, join_deadline=settings.join_deadline, now=clock())
        self._server = ControlServer(
            self, token=settings.token, host=settings.host, port=settings.port, idle_timeout=idle
        )
        self._ready = False
        self._prepare_task: asyncio.Task[None] | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._leave_task: asyncio.Task[None] | None = None
        self._finish_task: asyncio.Task[None] | None = None
        self._self_join_timer: asyncio.TimerHandle | None = None
        #: JOIN_AT, until the operator moves it (a reschedule that kept this staged Pod).
        self._join_at = settings.join_at
        self._max_duration_timer: asyncio.TimerHandle | None = None
        self._may_exit = asyncio.Event()  # the final document was read, or SIGTERM came
        self._stop = asyncio.Event()
        self._terminating = False
        bot.attach(StateReporter(self._state))

    # -- what the control server uses (server.Controls) ----------------------------------

    @property
    def state(self) -> StateHolder:
        return self._state

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def port(self) -> int:
        return self._server.port

    def request_join(self, request: JoinRequest) -> StateDoc:
        """The operator's join signal: start the join once, answer the resulting document."""
        if self._state.doc.state == "ready":
            url = request.meeting_url or self._settings.meeting_url
            if not url:
                raise ValueError(f"meetingUrl is missing and the Pod has no {p.ENV_MEETING_URL}")
            self._join(
                Meeting(
                    url=url,
                    bot_name=request.bot_name or self._settings.bot_name,
                    join_at=request.join_at if request.join_at is not None else self._settings.join_at,
                    config=self._settings.bot_config,
                    request_id=request.request_id,
                    joined_by=p.JoinedBy.SIGNAL,
                )
            )
        return self._state.doc

    def request_schedule(self, join_at: float) -> StateDoc:
        """The operator moved joinAt and kept this Pod: the safety net moves with it."""
        if self._state.doc.state == "ready":
            if self._self_join_timer is not None:
                self._self_join_timer.cancel()
                self._self_join_timer = None
            self._join_at = join_at
            self._arm_self_join(self._clock())
        return self._state.doc

    def request_leave(self, reason: str) -> StateDoc:
        """Leave the meeting (or give it up before joining); a no-op once leaving or over."""
        doc = self._state.doc
        if doc.state == "ready":
            self._cancel_timers()
            self._state.transition("ended", reason=reason, message="left before joining")
            self._start_finish()
        elif self._state.may_leave:
            self._state.transition("leaving", reason=reason, message=f"leaving: {reason}")
            self._leave_task = asyncio.create_task(self._leave(reason), name="leave")
        return self._state.doc

    def served(self, doc: StateDoc) -> None:
        if doc.terminal:
            self._may_exit.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve the API, start the warm-up, arm the safety net."""
        await self._server.start()
        self._prepare_task = asyncio.create_task(self._prepare(), name="prepare")
        self._arm_self_join(self._clock())

    async def wait(self) -> int:
        """Until the agent is done; the process exit code (0: ended or never joined, 1: failed)."""
        await self._stop.wait()
        return 1 if self._state.doc.state == "failed" else 0

    async def stop(self) -> None:
        """Release long-polls, stop serving, cancel whatever still runs."""
        self._cancel_timers()
        tasks = [self._prepare_task, self._session_task, self._leave_task, self._finish_task]
        pending = [task for task in tasks if task is not None and not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._state.close()
        await self._server.stop()

    async def run(self) -> int:
        await self.start()
        try:
            return await self.wait()
        finally:
            await self.stop()

    def terminate(self, *, force: bool = False) -> None:
        """SIGTERM: leave the meeting if in one, then exit; ``force``: exit at once.

        Repeated calls without ``force`` change nothing: a SIGTERM may arrive
        twice (sent to the Pod's process and to its process group), and the
        second must not cut the graceful leave short.
        """
        if force:
            logger.warning("Exiting without waiting for the bot.")
            self._stop.set()
            return
        if self._terminating:
            return
        self._terminating = True
        self._may_exit.set()
        doc = self._state.doc
        if self._state.may_leave:
            self.request_leave(p.REASON_TERMINATED)
        elif doc.state != "leaving" and self._finish_task is None:
            self._stop.set()  # nothing to leave and nothing to wait for

    # -- internals ---------------------------------------------------------------------------

    async def _prepare(self) -> None:
        try:
            await self._bot.prepare()
        except Exception as exc:
            logger.exception("The bot failed to prepare.")
            self._cancel_timers()
            self._state.transition("failed", reason=p.REASON_PREPARE_FAILED, message=_describe(exc))
            self._start_finish()
        else:
            self._ready = True
            logger.info("The bot is ready.")

    def _arm_self_join(self, now: float) -> None:
        settings = self._settings
        if self._join_at is None:
            return  # no schedule known: only the operator's signal can start the join
        _, at = self_join_plan(
            join_at=self._join_at, delay=settings.self_join_delay, deadline=settings.join_deadline, now=now
        )
        loop = asyncio.get_running_loop()
        self._self_join_timer = loop.call_later(max(0.0, at - now), self._on_self_join_timer)

    def _on_self_join_timer(self) -> None:
        self._self_join_timer = None
        settings = self._settings
        assert self._join_at is not None  # armed only with a join time
        now = self._clock()
        action, at = self_join_plan(
            join_at=self._join_at, delay=settings.self_join_delay, deadline=settings.join_deadline, now=now
        )
        if at - now > _EARLY_TOLERANCE_SECONDS:
            self._arm_self_join(now)
            return
        if self._state.doc.state != "ready":
            return
        if action == "miss":
            self._state.transition(
                "failed",
                reason=p.REASON_MISSED,
                message=f"no join signal by the join deadline ({settings.join_deadline:g} s after joinAt)",
            )
            self._start_finish()
        else:
            assert settings.meeting_url is not None  # AgentSettings requires it with join_at
            logger.warning("No join signal came by joinAt + %g s: joining on my own.", settings.self_join_delay)
            self._join(
                Meeting(
                    url=settings.meeting_url,
                    bot_name=settings.bot_name,
                    join_at=self._join_at,
                    config=settings.bot_config,
                    request_id=None,
                    joined_by=p.JoinedBy.DEADLINE,
                )
            )

    def _join(self, meeting: Meeting) -> None:
        self._cancel_timers()
        self._state.transition(
            "joining", message=f"joining {meeting.url}", joined_by=meeting.joined_by, request_id=meeting.request_id
        )
        if self._settings.max_duration is not None:
            loop = asyncio.get_running_loop()
            self._max_duration_timer = loop.call_later(self._settings.max_duration, self._on_max_duration)
        self._session_task = asyncio.create_task(self._session(meeting), name="session")
        self._start_finish()

    def _on_max_duration(self) -> None:
        self._max_duration_timer = None
        logger.info("Reached the maximum duration of %g s: leaving.", self._settings.max_duration)
        self.request_leave(p.REASON_MAX_DURATION)

    async def _session(self, meeting: Meeting) -> None:
        assert self._prepare_task is not None  # started before any join can be accepted
        await self._prepare_task
        if self._state.doc.state != "joining":
            return  # warm-up failed, or a leave came before the bot could start joining
        try:
            await self._bot.join(meeting)
        except BotFailure as failure:
            self._state.transition(
                "failed", reason=failure.reason, message=failure.message, exit_code=failure.exit_code
            )
        except Exception as exc:
            logger.exception("The bot's session failed.")
            self._state.transition("failed", reason=p.REASON_BOT_FAILED, message=_describe(exc))
        finally:
            self._cancel_timers()
        doc = self._state.doc
        if not doc.terminal:
            left = doc.state == "leaving"
            self._state.transition(
                "ended",
                reason=doc.reason if left else None,
                message="left the meeting" if left else "the bot's session is over",
            )

    async def _leave(self, reason: str) -> None:
        timeout = self._bot.leave_timeout
        try:
            async with asyncio.timeout(timeout):
                await self._bot.leave(reason)
                if self._session_task is not None:
                    # shield: on timeout, cancel only this wait; the session is cancelled below.
                    await asyncio.shield(self._session_task)
        except TimeoutError:
            logger.warning("The bot did not leave within %g s: stopping its session.", timeout)
            self._state.transition(
                "ended", reason=reason, message=f"the bot did not leave within {timeout:g} s; stopped"
            )
        except Exception as exc:
            logger.exception("The bot failed to leave.")
            self._state.transition("failed", reason=p.REASON_BOT_FAILED, message=f"leave failed: {_describe(exc)}")
        if self._session_task is not None and not self._session_task.done():
            self._session_task.cancel()

    def _start_finish(self) -> None:
        if self._finish_task is None:
            self._finish_task = asyncio.create_task(self._finish(), name="finish")

    async def _finish(self) -> None:
        """Stop once the bot is over and its final document was read (or after the linger)."""
        doc = self._state.doc
        while not doc.terminal and not self._state.closed:
            doc = await self._state.wait_after(doc.version, None)
        if self._session_task is not None:
            # A bot may report `ended` before its join() returns (hanging up); give it the
            # same time as a leave, and do not hang the Pod on a join() that never returns.
            await asyncio.wait([self._session_task], timeout=self._bot.leave_timeout)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.linger):
                await self._may_exit.wait()
        logger.info("The bot is %s: exiting.", doc.state)
        self._stop.set()

    def _cancel_timers(self) -> None:
        for timer in (self._self_join_timer, self._max_duration_timer):
            if timer is not None:
                timer.cancel()
        self._self_join_timer = self._max_duration_timer = None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def run_bot(bot: Bot, settings: AgentSettings | None = None) -> int:
    """Run ``bot`` as the Pod's main process; returns the exit code.

    Reads the settings from the Pod environment unless given, logs to stderr
    (stdout is left to the bot), and turns SIGTERM/SIGINT into a graceful leave.
    """
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings or AgentSettings.from_env()
    except SettingsError as exc:
        logger.error("Cannot start: %s", exc)
        return 2

    async def main() -> int:
        agent = Agent(bot, settings)
        interrupts = 0

        def interrupt() -> None:  # Ctrl-C leaves gracefully; a second Ctrl-C does not wait
            nonlocal interrupts
            interrupts += 1
            agent.terminate(force=interrupts > 1)

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, agent.terminate)
        loop.add_signal_handler(signal.SIGINT, interrupt)
        return await agent.run()

    return asyncio.run(main())
