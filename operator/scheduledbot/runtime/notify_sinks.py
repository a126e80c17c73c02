"""Where a bot's notifications go and what signs them: the sink (the bot's own, or the operator's default),
the egress policy every sink must pass, and the signing key (a Secret's, read at each attempt, or the default's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from scheduledbot.adapters.egress import EgressPolicy
from scheduledbot.adapters.kube import ApiError, Kube, denied_secret
from scheduledbot.api.notify import SigningKey, SigningKeyError, parse_signing_key, signing_key_from_secret
from scheduledbot.core.model import BotView
from scheduledbot.core.notify import Attempt, Deliver, Failure, Sink, resolve_sink
from scheduledbot.runtime.config import Settings


def egress_policy(settings: Settings) -> EgressPolicy:
    """The sinks the operator may reach: https to public addresses, and the administrator's extra hosts."""
    return EgressPolicy(admitted_hosts=settings.extra_notify_hosts, denied_networks=settings.notify_denied_networks)


def default_signing_key(settings: Settings) -> SigningKey | None:
    """The default sink's key, read at start-up so that a bad file stops the operator with its reason."""
    path = settings.default_notify_signing_key_file
    if path is None:
        return None
    source = f"--default-notify-signing-key-file {path}"
    try:
        text = path.read_text()
    except OSError as error:
        raise SigningKeyError(f"{source}: cannot read it: {error.strerror}") from None
    return parse_signing_key(text, source=source)


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Who a delivery is about and where it goes, as of the pass that planned it."""

    name: str
    namespace: str
    uid: str
    meeting_url: str | None
    sink: Sink


class Sinks:
    def __init__(self, *, settings: Settings, kube: Kube) -> None:
        self._default_url: Final = settings.default_notify_url
        self._default_key: Final = default_signing_key(settings)
        self.egress: Final = egress_policy(settings)
        if self._default_url is not None:
            self.egress.check_url(self._default_url)  # refused at start-up, not at the first change
        self._kube: Final = kube

    def sink(self, bot: BotView) -> Sink | None:
        """Where `bot`'s changes go; None: nowhere (no sink of its own, and no default)."""
        return resolve_sink(bot.spec.notify if bot.spec is not None else None, default_url=self._default_url)

    async def signing_key(self, deliver: Deliver, target: Target) -> SigningKey | Attempt:
        """The key for this delivery, read now (so an edited Secret is used at once), or why there is none."""
        ref = target.sink.key_ref
        if ref is None:
            if self._default_key is None:
                return Attempt(id=deliver.id, failure=Failure.KEY, detail="the operator has no default signing key")
            return self._default_key
        where = f"Secret {target.namespace}/{ref.name}"
        try:
            secret = await self._kube.read_opted_in_secret(target.namespace, ref.name)
        except ApiError as error:
            return Attempt(id=deliver.id, failure=Failure.KEY, detail=denied_secret(target.namespace, ref.name, error))
        if secret is None:
            return Attempt(id=deliver.id, failure=Failure.KEY, detail=f"{where}: not found")
        try:
            return signing_key_from_secret(secret, ref=ref)
        except SigningKeyError as error:
            return Attempt(id=deliver.id, failure=Failure.KEY, detail=str(error))
