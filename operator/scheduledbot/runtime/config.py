"""Operator configuration: flags, each with an environment variable of the same meaning.

Precedence: a flag beats its variable, which beats the default. docs/configuration.md
is the reference table; `scheduledbot-operator --help` prints the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scheduledbot.core.children import default_template
from scheduledbot.core.election import (
    DEFAULT_LEASE_DURATION,
    DEFAULT_RENEW_DEADLINE,
    DEFAULT_RETRY_PERIOD,
    Timing,
)
from scheduledbot.core.model import Defaults
from scheduledbot.core.tokens import MIN_KEY_BYTES

DEFAULT_IMAGE = "ghcr.io/meetingbots/scheduledbot-operator:0.1.0"


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


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"SCHEDULEDBOT_{name}", default)


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scheduledbot-operator",
        description="Kubernetes operator that makes meeting bots join meetings exactly on time. "
        "Every flag can also be set by the environment variable shown.",
    )
    add = p.add_argument
    add(
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="namespace to watch, repeatable; default: all namespaces [SCHEDULEDBOT_NAMESPACES, comma-separated]",
    )
    add(
        "--default-image",
        default=_env("DEFAULT_IMAGE", DEFAULT_IMAGE),
        help="image of the default bot template (the demo bot) [SCHEDULEDBOT_DEFAULT_IMAGE]",
    )
    add(
        "--default-template-file",
        default=_env("DEFAULT_TEMPLATE_FILE"),
        metavar="PATH",
        help="YAML PodTemplateSpec used when a ScheduledBot has no spec.template [SCHEDULEDBOT_DEFAULT_TEMPLATE_FILE]",
    )
    add(
        "--default-staging-lead-seconds",
        type=int,
        default=int(_env("DEFAULT_STAGING_LEAD_SECONDS", "300") or 300),
        help="staging lead when spec.stagingLeadSeconds is absent [SCHEDULEDBOT_DEFAULT_STAGING_LEAD_SECONDS]",
    )
    add(
        "--default-join-deadline-seconds",
        type=int,
        default=int(_env("DEFAULT_JOIN_DEADLINE_SECONDS", "120") or 120),
        help="how late a join may still happen when spec.joinDeadlineSeconds is absent "
        "[SCHEDULEDBOT_DEFAULT_JOIN_DEADLINE_SECONDS]",
    )
    add(
        "--default-max-duration-seconds",
        type=int,
        default=int(_env("DEFAULT_MAX_DURATION_SECONDS", "14400") or 14400),
        help="longest stay in a meeting when spec.maxDurationSeconds is absent "
        "[SCHEDULEDBOT_DEFAULT_MAX_DURATION_SECONDS]",
    )
    add(
        "--extra-meeting-hosts",
        default=_env("EXTRA_MEETING_HOSTS", ""),
        metavar="HOST[:PORT],...",
        help="ADMIN ONLY, off by default: extra meeting hosts admitted as platform 'local' (http or https), "
        "for demos and tests with the local meeting server [SCHEDULEDBOT_EXTRA_MEETING_HOSTS]",
    )
    add(
        "--extra-feed-hosts",
        default=_env("EXTRA_FEED_HOSTS", ""),
        metavar="HOST[:PORT],...",
        help="ADMIN ONLY, off by default: BotSchedule calendar feed hosts that may be fetched over http and on "
        "loopback, link-local or cluster addresses (SSRF guard), for tests with a local ICS server "
        "[SCHEDULEDBOT_EXTRA_FEED_HOSTS]",
    )
    add(
        "--self-join-delay-seconds",
        type=float,
        default=float(_env("SELF_JOIN_DELAY_SECONDS", "2") or 2),
        help="delay after joinAt at which a bot joins on its own if no signal came "
        "[SCHEDULEDBOT_SELF_JOIN_DELAY_SECONDS]",
    )
    add("--log-level", default=_env("LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING, ERROR [SCHEDULEDBOT_LOG_LEVEL]")
    add(
        "--log-format",
        default=_env("LOG_FORMAT", "text"),
        choices=["text", "json"],
        help="text or json [SCHEDULEDBOT_LOG_FORMAT]",
    )
    add(
        "--health-listen",
        default=_env("HEALTH_LISTEN", "127.0.0.1"),
        help="address /healthz binds; in a Pod, 0.0.0.0 so that the kubelet's probes reach it "
        "[SCHEDULEDBOT_HEALTH_LISTEN]",
    )
    add(
        "--metrics-listen",
        default=_env("METRICS_LISTEN", "127.0.0.1"),
        help="address /metrics binds; in a Pod, 0.0.0.0 so that Prometheus reaches it [SCHEDULEDBOT_METRICS_LISTEN]",
    )
    add(
        "--token-key-file",
        default=_env("TOKEN_KEY_FILE"),
        metavar="PATH",
        help=f"the key bot tokens are derived from (at least {MIN_KEY_BYTES} bytes; a Secret mounted as a file); "
        "without it, a fresh key per start, and bots staged before a restart no longer accept this operator's "
        "calls [SCHEDULEDBOT_TOKEN_KEY_FILE]",
    )
    add(
        "--health-port",
        type=int,
        default=int(_env("HEALTH_PORT", "8081") or 8081),
        help="port of /healthz (liveness and readiness) [SCHEDULEDBOT_HEALTH_PORT]",
    )
    add(
        "--metrics-port",
        type=int,
        default=int(_env("METRICS_PORT", "8080") or 8080),
        help="port of the Prometheus /metrics endpoint; 0 disables [SCHEDULEDBOT_METRICS_PORT]",
    )
    add(
        "--no-webhook",
        action="store_true",
        default=_env("WEBHOOK", "on") == "off",
        help="do not serve the admission webhook (the backstop still fails bad bots) [SCHEDULEDBOT_WEBHOOK=off]",
    )
    add(
        "--webhook-listen",
        default=_env("WEBHOOK_LISTEN", "0.0.0.0"),
        help="address the webhook server binds [SCHEDULEDBOT_WEBHOOK_LISTEN]",
    )
    add(
        "--webhook-port",
        type=int,
        default=int(_env("WEBHOOK_PORT", "9443") or 9443),
        help="port the webhook server binds [SCHEDULEDBOT_WEBHOOK_PORT]",
    )
    add(
        "--webhook-host",
        default=_env("WEBHOOK_HOST", "127.0.0.1"),
        help="host the API server dials when no --webhook-service is set [SCHEDULEDBOT_WEBHOOK_HOST]",
    )
    add(
        "--webhook-service",
        default=_env("WEBHOOK_SERVICE"),
        metavar="NAMESPACE/NAME",
        help="in a cluster: the Service in front of the webhook (port 443) [SCHEDULEDBOT_WEBHOOK_SERVICE]",
    )
    add(
        "--webhook-config-name",
        default=_env("WEBHOOK_CONFIG_NAME", "scheduledbot-operator"),
        help="name of the ValidatingWebhookConfiguration the operator manages [SCHEDULEDBOT_WEBHOOK_CONFIG_NAME]",
    )
    add(
        "--webhook-cert-dir",
        default=_env("WEBHOOK_CERT_DIR"),
        metavar="DIR",
        help="where the serving certificate (tls.crt, tls.key) is written, or read with "
        "--webhook-configuration=external; default: a temporary directory [SCHEDULEDBOT_WEBHOOK_CERT_DIR]",
    )
    add(
        "--webhook-configuration",
        default=_env("WEBHOOK_CONFIGURATION", "auto"),
        choices=["auto", "patch", "write", "external"],
        help="patch: make a certificate and set the caBundle of the installed configuration; write: make a "
        "certificate and write the whole configuration (development; needs create rights); external: serve the "
        "certificate found in --webhook-cert-dir and leave the configuration to others (cert-manager's CA "
        "injector); auto: write without --webhook-service, patch with it [SCHEDULEDBOT_WEBHOOK_CONFIGURATION]",
    )
    add(
        "--webhook-client-ca-file",
        default=_env("WEBHOOK_CLIENT_CA_FILE"),
        metavar="PATH",
        help="CA of the client certificate the API server presents to webhooks: callers without one are refused "
        "and the bot Pod is dry-run only for those that have one [SCHEDULEDBOT_WEBHOOK_CLIENT_CA_FILE]",
    )
    add(
        "--webhook-client-name",
        action="append",
        dest="webhook_client_names",
        metavar="NAME",
        help="accepted common name of that client certificate, repeatable; default: any the CA signed "
        "[SCHEDULEDBOT_WEBHOOK_CLIENT_NAMES, comma-separated]",
    )
    add(
        "--leader-elect",
        action="store_true",
        default=_env("LEADER_ELECT", "off") == "on",
        help="run as one of several replicas: only the holder of a Lease writes, the others stand by with the "
        "same picture and the same armed joins [SCHEDULEDBOT_LEADER_ELECT=on]",
    )
    add(
        "--leader-election-namespace",
        default=_env("LEADER_ELECTION_NAMESPACE"),
        metavar="NS",
        help="namespace of the Lease; default: the Pod's own (POD_NAMESPACE), else default "
        "[SCHEDULEDBOT_LEADER_ELECTION_NAMESPACE]",
    )
    add(
        "--leader-election-lease-name",
        default=_env("LEADER_ELECTION_LEASE_NAME", "scheduledbot-operator"),
        metavar="NAME",
        help="name of the Lease; replicas of one installation share it [SCHEDULEDBOT_LEADER_ELECTION_LEASE_NAME]",
    )
    add(
        "--leader-election-lease-duration",
        type=float,
        default=float(_env("LEADER_ELECTION_LEASE_DURATION", str(DEFAULT_LEASE_DURATION)) or DEFAULT_LEASE_DURATION),
        metavar="SECONDS",
        help="how long a standby waits, after it last saw the Lease renewed, before it takes over (whole seconds) "
        "[SCHEDULEDBOT_LEADER_ELECTION_LEASE_DURATION]",
    )
    add(
        "--leader-election-renew-deadline",
        type=float,
        default=float(_env("LEADER_ELECTION_RENEW_DEADLINE", str(DEFAULT_RENEW_DEADLINE)) or DEFAULT_RENEW_DEADLINE),
        metavar="SECONDS",
        help="how long the leader keeps writing without a successful renewal; shorter than the lease duration "
        "[SCHEDULEDBOT_LEADER_ELECTION_RENEW_DEADLINE]",
    )
    add(
        "--leader-election-retry-period",
        type=float,
        default=float(_env("LEADER_ELECTION_RETRY_PERIOD", str(DEFAULT_RETRY_PERIOD)) or DEFAULT_RETRY_PERIOD),
        metavar="SECONDS",
        help="how often the leader renews and a standby looks at the Lease [SCHEDULEDBOT_LEADER_ELECTION_RETRY_PERIOD]",
    )
    add(
        "--default-notify-url",
        default=_env("DEFAULT_NOTIFY_URL"),
        metavar="URL",
        help="sink of the state-change notifications of bots without spec.notify.url; needs "
        "--default-notify-signing-key-file [SCHEDULEDBOT_DEFAULT_NOTIFY_URL]",
    )
    add(
        "--default-notify-signing-key-file",
        default=_env("DEFAULT_NOTIFY_SIGNING_KEY_FILE"),
        metavar="PATH",
        help="file holding the default sink's signing key (whsec_...), read at start-up "
        "[SCHEDULEDBOT_DEFAULT_NOTIFY_SIGNING_KEY_FILE]",
    )
    add(
        "--extra-notify-hosts",
        default=_env("EXTRA_NOTIFY_HOSTS", ""),
        metavar="HOST[:PORT],...",
        help="ADMIN ONLY, off by default: notification sink hosts admitted over http and at any address "
        "(loopback, cluster-internal), for demos and tests with a local receiver [SCHEDULEDBOT_EXTRA_NOTIFY_HOSTS]",
    )
    add(
        "--notify-denied-networks",
        default=_env("NOTIFY_DENIED_NETWORKS", ""),
        metavar="CIDR,...",
        help="more networks a sink may not resolve to, beside loopback, link-local, private and reserved "
        "ranges (a cluster that uses public ranges inside) [SCHEDULEDBOT_NOTIFY_DENIED_NETWORKS]",
    )
    add(
        "--notify-concurrency",
        type=int,
        default=int(_env("NOTIFY_CONCURRENCY", "16") or 16),
        help="notifications in flight at once, all bots together [SCHEDULEDBOT_NOTIFY_CONCURRENCY]",
    )
    add(
        "--notify-max-retry-seconds",
        type=float,
        default=float(_env("NOTIFY_MAX_RETRY_SECONDS", "86400") or 86400),
        help="how long a state change is retried before it is given up [SCHEDULEDBOT_NOTIFY_MAX_RETRY_SECONDS]",
    )
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
        denied = tuple(ipaddress.ip_network(cidr) for cidr in _csv(args.notify_denied_networks))
    except ValueError as error:
        p.error(f"--notify-denied-networks: {error} (expected CIDRs such as 100.64.0.0/10, comma-separated)")
    if args.notify_concurrency < 1:
        p.error(f"--notify-concurrency: must be at least 1, got {args.notify_concurrency}")
    if args.notify_max_retry_seconds <= 0:
        p.error(f"--notify-max-retry-seconds: must be positive, got {args.notify_max_retry_seconds:g}")
    if bool(args.default_notify_url) != bool(args.default_notify_signing_key_file):
        p.error("--default-notify-url and --default-notify-signing-key-file come together: a sink needs its key")
    namespaces = tuple(args.namespaces or ()) or _csv(_env("NAMESPACES"))
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
        extra_meeting_hosts=frozenset(_csv(args.extra_meeting_hosts)),
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
        webhook_client_names=frozenset(args.webhook_client_names or _csv(_env("WEBHOOK_CLIENT_NAMES"))),
        extra_feed_hosts=frozenset(_csv(args.extra_feed_hosts)),
        leader_election=args.leader_elect,
        leader_election_namespace=args.leader_election_namespace or os.environ.get("POD_NAMESPACE") or "default",
        leader_election_lease_name=args.leader_election_lease_name,
        leader_election_timing=timing,
        default_notify_url=args.default_notify_url or None,
        default_notify_signing_key_file=(
            Path(args.default_notify_signing_key_file) if args.default_notify_signing_key_file else None
        ),
        extra_notify_hosts=frozenset(_csv(args.extra_notify_hosts)),
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
