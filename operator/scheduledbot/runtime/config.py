"""Operator configuration: flags, each with an environment variable of the same meaning.

Precedence: a flag beats its variable, which beats the default. docs/configuration.md
is the reference table; `scheduledbot-operator --help` prints the same. The flags
are declared by concern (runtime/flags.py, flags_webhook.py, flags_notify.py), the
settings they make in runtime/settings.py; here they are parsed, checked and read.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from pathlib import Path

import yaml

from scheduledbot.core.children import default_template
from scheduledbot.core.election import Timing
from scheduledbot.core.model import Defaults
from scheduledbot.core.tokens import MIN_KEY_BYTES
from scheduledbot.runtime.flags import DEFAULT_IMAGE, bot_flags, csv, env, leader_flags, process_flags
from scheduledbot.runtime.flags_notify import notify_flags
from scheduledbot.runtime.flags_webhook import webhook_flags
from scheduledbot.runtime.settings import Settings

__all__ = ["DEFAULT_IMAGE", "Settings", "load", "parser", "with_token_key"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scheduledbot-operator",
        description="Kubernetes operator that makes meeting bots join meetings exactly on time. "
        "Every flag can also be set by the environment variable shown.",
    )
    # In this order in `--help` and in docs/configuration.md's table.
    for flags in (bot_flags, process_flags, webhook_flags, leader_flags, notify_flags):
        flags(p.add_argument)
    return p


def load(argv: list[str] | None = None) -> Settings:
    p = parser()
    args = p.parse_args(argv)
    timing = Timing(
        lease_duration=args.leader_election_lease_duration,
        renew_deadline=args.leader_election_renew_deadline,
        retry_period=args.leader_election_retry_period,
    )
    if problems := timing.problems():
        p.error("--leader-election-lease-duration/-renew-deadline/-retry-period: " + "; ".join(problems))
    try:
        denied = tuple(ipaddress.ip_network(cidr) for cidr in csv(args.notify_denied_networks))
    except ValueError as error:
        p.error(f"--notify-denied-networks: {error} (expected CIDRs such as 100.64.0.0/10, comma-separated)")
    if args.notify_concurrency < 1:
        p.error(f"--notify-concurrency: must be at least 1, got {args.notify_concurrency}")
    if args.notify_max_retry_seconds <= 0:
        p.error(f"--notify-max-retry-seconds: must be positive, got {args.notify_max_retry_seconds:g}")
    if bool(args.default_notify_url) != bool(args.default_notify_signing_key_file):
        p.error("--default-notify-url and --default-notify-signing-key-file come together: a sink needs its key")
    namespaces = tuple(args.namespaces or ()) or csv(env("NAMESPACES"))
    if args.default_template_file:
        template = yaml.safe_load(Path(args.default_template_file).read_text())
    else:
        template = default_template(image=args.default_image)
    return Settings(
        token_key_file=Path(args.token_key_file) if args.token_key_file else None,
        health_listen=args.health_listen,
        metrics_listen=args.metrics_listen,
        namespaces=namespaces,
        defaults=Defaults(
            staging_lead_seconds=args.default_staging_lead_seconds,
            join_deadline_seconds=args.default_join_deadline_seconds,
            max_duration_seconds=args.default_max_duration_seconds,
        ),
        template=template,
        extra_meeting_hosts=frozenset(csv(args.extra_meeting_hosts)),
        self_join_delay_seconds=args.self_join_delay_seconds,
        log_level=args.log_level.upper(),
        log_format=args.log_format,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        webhook=not args.no_webhook,
        webhook_listen=args.webhook_listen,
        webhook_port=args.webhook_port,
        webhook_host=args.webhook_host,
        webhook_service=args.webhook_service,
        webhook_config_name=args.webhook_config_name,
        webhook_cert_dir=Path(args.webhook_cert_dir) if args.webhook_cert_dir else None,
        webhook_configuration=_configuration_mode(args.webhook_configuration, service=args.webhook_service),
        webhook_client_ca_file=Path(args.webhook_client_ca_file) if args.webhook_client_ca_file else None,
        webhook_client_names=frozenset(args.webhook_client_names or csv(env("WEBHOOK_CLIENT_NAMES"))),
        extra_feed_hosts=frozenset(csv(args.extra_feed_hosts)),
        leader_election=args.leader_elect,
        leader_election_namespace=args.leader_election_namespace or os.environ.get("POD_NAMESPACE") or "default",
        leader_election_lease_name=args.leader_election_lease_name,
        leader_election_timing=timing,
        default_notify_url=args.default_notify_url or None,
        default_notify_signing_key_file=(
            Path(args.default_notify_signing_key_file) if args.default_notify_signing_key_file else None
        ),
        extra_notify_hosts=frozenset(csv(args.extra_notify_hosts)),
        notify_denied_networks=denied,
        notify_concurrency=args.notify_concurrency,
        notify_max_retry_seconds=args.notify_max_retry_seconds,
    )


def _configuration_mode(mode: str, *, service: str | None) -> str:
    # In a cluster the configuration is installed with the manifests; outside, nothing installed it.
    if mode == "auto":
        return "patch" if service else "write"
    return mode


def with_token_key(settings: Settings) -> Settings:
    """The settings with the key read from `--token-key-file`, if one is named; exits naming the problem."""
    path = settings.token_key_file
    if path is None:
        return settings
    try:
        key = path.read_bytes().strip()
    except OSError as error:
        parser().error(f"--token-key-file: cannot read {path}: {error.strerror}")
    if len(key) < MIN_KEY_BYTES:
        parser().error(
            f"--token-key-file: {path} holds {len(key)} bytes; at least {MIN_KEY_BYTES} are required "
            "(e.g. `head -c 32 /dev/urandom | base64`)"
        )
    return dataclasses.replace(settings, token_key=key)
