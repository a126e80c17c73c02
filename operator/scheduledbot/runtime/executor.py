"""Carrying out a pass's actions: the API writes and the bot calls `core.plan` decided.

It reaches the API server and the bots through two ports (`KubePort`, `BotsPort`), the
parts of adapters.kube.Kube and adapters.bots.BotClient it uses, so that unit tests
pass recording fakes. What it must remember of a bot between passes (a refusal, the
leave requests in flight) is the bot's `Memory`, which the engine's pass observes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from scheduledbot.adapters.bots import BotUnreachable, JoinLine
from scheduledbot.adapters.kube import ApiError
from scheduledbot.core import children, tokens
from scheduledbot.core.botpod import Refusal, bot_pod
from scheduledbot.core.model import (
    FINALIZER,
    Action,
    AddFinalizer,
    ArmJoin,
    BotReport,
    BotView,
    CreatePod,
    CreateSecret,
    DeletePod,
    DisarmJoin,
    Leave,
    MoveSelfJoin,
    RemoveFinalizer,
)
from scheduledbot.runtime.cache import Cache, Deleting, Key, Seen, controller
from scheduledbot.runtime.classes import ClassCatalog
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.dispatch_thread import DispatcherThread
from scheduledbot.runtime.dispatcher import JoinDispatcher
from scheduledbot.runtime.stager import Stager
from scheduledbot.runtime.workqueue import Passes
from scheduledbot.timestamps import format_time

log = logging.getLogger(__name__)

#: Back-off of a bot call after a failure (the state long-poll's, a leave's): computed, growing, capped.
BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)
#: API answers to a Pod creation that no retry can change.
_REFUSALS = frozenset({400, 403, 422})


class KubePort(Protocol):
    async def create_secret(self, namespace: str, body: dict[str, Any]) -> bool: ...
    async def create_pod(self, namespace: str, body: dict[str, Any], *, dry_run: bool = False) -> bool: ...
    async def find_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def delete_pod(self, namespace: str, name: str, uid: str) -> None: ...
    async def set_finalizer(self, body: dict[str, Any], finalizer: str, *, present: bool) -> dict[str, Any] | None: ...
    async def read_bot_class(self, name: str) -> dict[str, Any] | None: ...


class BotsPort(Protocol):
    async def leave(self, address: str, token: str, *, reason: str) -> BotReport: ...
    async def move_self_join(self, address: str, token: str, *, join_at: datetime) -> BotReport: ...


@dataclass(slots=True)
class Memory:
    """What the executor remembers of one bot between passes.

    Every bot has one, from its first pass: its Events said and its addresses left are a
    tuple and a frozenset, replaced when they grow (a few per bot's life), not two sets
    of their own: an empty set is 216 bytes, a one-Event tuple 48 (bench/memory.py, 10,000
    waiting bots: 533 bytes per bot before, 101 after)."""

    #: The Events (reason, message) posted for this bot, so that a repeated pass does not post one again.
    said: tuple[tuple[str, str], ...] = ()
    #: Addresses asked to leave (the request in flight or answered).
    left: frozenset[str] = frozenset()
    #: Leave requests that failed in a row: the next one waits a growing, capped time.
    leave_failures: int = 0
    rejection: str | None = None
    rejection_reason: str | None = None


class Executor:
    def __init__(
        self,
        *,
        settings: Settings,
        kube: KubePort,
        bots: BotsPort,
        classes: ClassCatalog,
        stager: Stager[Key],
        dispatcher: JoinDispatcher[Key] | DispatcherThread[Key],
        join_line: Callable[..., JoinLine],
        passes: Passes[Key],
    ) -> None:
        self._settings: Final = settings
        self._kube: Final = kube
        self._bots: Final = bots
        self._classes: Final = classes
        self._stager: Final = stager
        self._dispatcher: Final = dispatcher
        self._join_line: Final = join_line
        self._passes: Final = passes
        self._memory: Final[dict[Key, Memory]] = {}

    def memory(self, key: Key) -> Memory:
        return self._memory.setdefault(key, Memory())

    def forget(self, key: Key) -> None:
        self._memory.pop(key, None)

    async def act(self, key: Key, seen: Seen, memory: Memory, bot: BotView, action: Action, now: datetime) -> bool:
        """Carry out one action; False when the API server refused it for good."""
        namespace, name = key
        match action:
            case CreateSecret():
                body = children.build_secret(
                    name=name, namespace=namespace, uid=bot.uid, token=self.token(bot), secret=self.secret_name(bot)
                )
                # AlreadyExists: an earlier pass's (nobody without the key can take this name).
                await self._kube.create_secret(namespace, body)
                seen.secret = True
            case CreatePod(join_at=join_at):
                return await self._create_pod(key, seen, memory, bot, join_at)
            case DeletePod(uid=uid):
                await self._kube.delete_pod(namespace, children.pod_name(name), uid)
                seen.deleting = Deleting(uid=uid, since=format_time(now))
            case ArmJoin(join_at=join_at, address=address, request_id=request_id, not_before=not_before):
                if bot.spec is None:
                    return True
                line = self._join_line(
                    address=address,
                    token=self.token(bot),
                    request_id=request_id,
                    meeting_url=bot.spec.meeting_url,
                    bot_name=bot.spec.bot_name,
                    join_at=format_time(join_at),
                )
                self._dispatcher.arm(key, join_at=join_at, not_before=not_before, line=line, request_id=request_id)
            case DisarmJoin():
                self._dispatcher.disarm(key)
            case MoveSelfJoin(join_at=join_at, address=address):
                call = self._bots.move_self_join(address, self.token(bot), join_at=join_at)
                self._spawn(_bot_call(call))
            case Leave(address=address, reason=reason):
                if address not in memory.left:
                    # In flight or done; a failure takes it back (`_leave`), so it is asked again.
                    memory.left |= {address}
                    self._spawn(self._leave(key, memory, address, self.token(bot), reason))
            case AddFinalizer() | RemoveFinalizer():
                assert seen.body is not None
                written = await self._kube.set_finalizer(seen.body, FINALIZER, present=isinstance(action, AddFinalizer))
                Cache.wrote(seen, written)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._passes.spawn(coro)

    def token(self, bot: BotView) -> str:
        return self.token_of(bot.namespace, bot.name, bot.uid)

    def token_of(self, namespace: str, name: str, uid: str) -> str:
        """The bot's bearer token, computed (never stored or read back: `core.tokens`)."""
        return tokens.bot_token(self._settings.token_key, namespace=namespace, name=name, uid=uid)

    def secret_name(self, bot: BotView) -> str:
        return children.secret_name(bot.name, tokens.secret_tag(self._settings.token_key, uid=bot.uid))

    async def _create_pod(self, key: Key, seen: Seen, memory: Memory, bot: BotView, join_at: datetime) -> bool:
        """Create the bot's Pod; False when it cannot be (the next pass fails the bot with the reason)."""
        namespace, name = key
        assert bot.spec is not None
        if bot.spec.bot_class_name is not None:
            await self._classes.learn(bot.spec.bot_class_name, self._kube)
        settings = self._settings
        built = bot_pod(
            name=name,
            namespace=namespace,
            uid=bot.uid,
            spec=bot.spec,
            classes=self._classes.snapshot(),
            default_template=settings.template,
            defaults=settings.defaults,
            self_join_delay_seconds=settings.self_join_delay_seconds,
            join_at=join_at,
            token_secret=self.secret_name(bot),
        )
        if isinstance(built, Refusal):
            memory.rejection, memory.rejection_reason = built.message, built.reason
            return False
        try:
            created = await self._kube.create_pod(namespace, built.pod)
        except ApiError as error:
            if error.status not in _REFUSALS:
                raise
            # Retrying cannot help: the next pass fails the bot with the server's reason.
            memory.rejection = error.message
            return False
        if not created:
            conflict = await self._foreign_pod(namespace, name)
            if conflict is not None:
                memory.rejection, memory.rejection_reason = conflict, "NameConflict"
                return False
            return True
        self._stager.created(key)
        if seen.pod is None:
            seen.created = built.pod
        return True

    async def _foreign_pod(self, namespace: str, name: str) -> str | None:
        """Why the Pod found under bot `name`'s Pod name is not its to use; None when it is (an earlier pass's)."""
        pod = children.pod_name(name)
        found = await self._kube.find_pod(namespace, pod)
        if found is None:
            # Gone since the AlreadyExists: the next pass creates it.
            return None
        if controller(found) == name:
            # This bot's, or a predecessor's of the same name (deleted and created again): the
            # garbage collector removes a Pod whose owner is gone, and its deletion starts a new pass.
            return None
        return (
            f"Pod {pod!r} already exists and was not created by the operator for this ScheduledBot; "
            "it is left alone: delete or rename it, then apply the ScheduledBot again"
        )

    async def _leave(self, key: Key, memory: Memory, address: str, token: str, reason: str) -> None:
        try:
            await self._bots.leave(address, token, reason=reason)
        except BotUnreachable as error:
            delay = BACKOFF[min(memory.leave_failures, len(BACKOFF) - 1)]
            memory.leave_failures += 1
            log.warning("leave of %s/%s failed (%s); asking again in %.1f s", *key, error, delay)
            memory.left -= {address}
            # No later than the back-off, and never later than the pass's own wake-up (the
            # leave timeout's, say): a retry must not push back what the pass computed.
            self._passes.wake_within(key, delay)
            return
        memory.leave_failures = 0


async def _bot_call(call: Awaitable[BotReport]) -> None:
    try:
        await call
    except BotUnreachable as error:
        log.warning("bot call failed: %s", error)
