"""What the agent knows about its Pod: read once from the environment at start.

Reading everything up front (and the token file once) means a misconfigured
Pod fails at start with a clear message, while it is still staged and minutes
before its meeting, rather than at the join instant.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from scheduledbot import protocol as p
from scheduledbot.timestamps import parse_epoch

#: How long the agent keeps serving after the bot ended or failed, waiting for
#: the operator to read the final document (it exits as soon as it has).
DEFAULT_LINGER_SECONDS: Final = 60.0


class SettingsError(ValueError):
    """The Pod's environment is unusable; the message says which variable and why."""


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    """The Pod's meeting, identity and timing, plus where and how to serve the control API."""

    token: str = field(repr=False)  # never printed: repr() of settings ends up in logs
    host: str = "0.0.0.0"
    port: int = p.DEFAULT_CONTROL_PORT
    meeting_url: str | None = None
    bot_name: str | None = None
    join_at: float | None = None  # epoch seconds
    bot_config: Mapping[str, Any] = field(default_factory=dict)
    self_join_delay: float = p.DEFAULT_SELF_JOIN_DELAY_SECONDS
    join_deadline: float | None = None  # seconds after join_at; None: no deadline
    max_duration: float | None = None  # seconds after the join started; None: no limit
    linger: float = DEFAULT_LINGER_SECONDS
    pod_name: str | None = None

    def __post_init__(self) -> None:
        if not self.token:
            raise SettingsError("the control API needs a non-empty token")
        if self.join_at is not None and not self.meeting_url:
            # The safety net would have nothing to join at the deadline.
            raise SettingsError(f"{p.ENV_JOIN_AT} is set but {p.ENV_MEETING_URL} is not")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> AgentSettings:
        """Build the settings from the Pod environment of docs/bot-protocol.md.

        Raises :class:`SettingsError` naming the offending variable.
        """
        token_file = environ.get(p.ENV_BOT_TOKEN_FILE)
        if not token_file:
            raise SettingsError(f"{p.ENV_BOT_TOKEN_FILE} is not set: the control API needs a token")
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"{p.ENV_BOT_TOKEN_FILE}: cannot read the token file: {exc.strerror}") from None
        if not token:
            raise SettingsError(f"{p.ENV_BOT_TOKEN_FILE}: the token file is empty")

        join_at_text = environ.get(p.ENV_JOIN_AT)
        try:
            join_at = parse_epoch(join_at_text) if join_at_text else None
        except ValueError as exc:
            raise SettingsError(f"{p.ENV_JOIN_AT}: {exc}") from None

        config_text = environ.get(p.ENV_BOT_CONFIG) or "{}"
        try:
            bot_config = json.loads(config_text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{p.ENV_BOT_CONFIG}: not JSON: {exc}") from None
        if not isinstance(bot_config, dict):
            raise SettingsError(f"{p.ENV_BOT_CONFIG}: must be a JSON object")

        port = _number(environ, p.ENV_BOT_CONTROL_PORT, int)
        self_join_delay = _number(environ, p.ENV_BOT_SELF_JOIN_DELAY_SECONDS, float)
        return cls(
            token=token,
            host=environ.get(p.ENV_POD_IP) or "0.0.0.0",
            port=p.DEFAULT_CONTROL_PORT if port is None else port,
            meeting_url=environ.get(p.ENV_MEETING_URL) or None,
            bot_name=environ.get(p.ENV_BOT_NAME) or None,
            join_at=join_at,
            bot_config=bot_config,
            self_join_delay=p.DEFAULT_SELF_JOIN_DELAY_SECONDS if self_join_delay is None else self_join_delay,
            join_deadline=_number(environ, p.ENV_JOIN_DEADLINE_SECONDS, float),
            max_duration=_number(environ, p.ENV_MAX_DURATION_SECONDS, float),
            pod_name=environ.get(p.ENV_POD_NAME) or None,
        )


_Number = TypeVar("_Number", int, float)


def _number(environ: Mapping[str, str], name: str, kind: type[_Number]) -> _Number | None:
    text = environ.get(name)
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise SettingsError(f"{name}: not a number: {text!r}") from None
    if value < 0:
        raise SettingsError(f"{name}: must not be negative: {text!r}")
    return value
