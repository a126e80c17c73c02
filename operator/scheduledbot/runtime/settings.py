"""The operator's settings: what the flags (runtime/config.py) and the files they name decide."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduledbot.core.election import Timing
from scheduledbot.core.model import Defaults
from scheduledbot.core.tokens import MIN_KEY_BYTES


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    namespaces: tuple[str, ...]
    defaults: Defaults
    template: dict[str, Any]
    extra_meeting_hosts: frozenset[str]
    self_join_delay_seconds: float
    log_level: str
    log_format: str
    health_port: int
    metrics_port: int
    webhook: bool
    webhook_listen: str
    webhook_port: int
    webhook_host: str
    webhook_service: str | None
    webhook_config_name: str
    webhook_cert_dir: Path | None
    #: patch, write or external (`auto` resolved by `load`); runtime/webhook.py says what each does.
    webhook_configuration: str = "patch"
    webhook_client_ca_file: Path | None = None
    webhook_client_names: frozenset[str] = frozenset()
    #: Calendar feed hosts admitted over http and on any address (loopback, cluster): tests, demos.
    extra_feed_hosts: frozenset[str] = frozenset()
    #: The key bot tokens are derived from (core/tokens.py): read from `token_key_file` by
    #: `with_token_key` at start, else a fresh one.
    token_key: bytes = field(default_factory=lambda: secrets.token_bytes(MIN_KEY_BYTES), repr=False)
    #: Where the key came from, for the start-up log: a path, or None for a fresh key.
    token_key_file: Path | None = None
    health_listen: str = "127.0.0.1"
    metrics_listen: str = "127.0.0.1"
    #: Off: this process is the only one and always writes. On: runtime/leader.py.
    leader_election: bool = False
    leader_election_namespace: str = "default"
    leader_election_lease_name: str = "scheduledbot-operator"
    leader_election_timing: Timing = field(default_factory=Timing)
    #: Notifications (docs/notifications.md): the default sink, the egress policy, the deliverer's bounds.
    default_notify_url: str | None = None
    default_notify_signing_key_file: Path | None = None
    extra_notify_hosts: frozenset[str] = frozenset()
    notify_denied_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    notify_concurrency: int = 16
    notify_max_retry_seconds: float = 24 * 3600.0
