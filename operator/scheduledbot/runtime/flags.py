"""The operator's flags for its bots and its process, each defaulting to its SCHEDULEDBOT_ variable.

runtime/config.py puts them in one parser with the webhook's (runtime/flags_webhook.py)
and the notifications' (runtime/flags_notify.py), in the order of `--help`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from scheduledbot.core.election import DEFAULT_LEASE_DURATION, DEFAULT_RENEW_DEADLINE, DEFAULT_RETRY_PERIOD
from scheduledbot.core.tokens import MIN_KEY_BYTES

#: `argparse.ArgumentParser.add_argument` of the parser the flags go to.
Add = Callable[..., argparse.Action]

DEFAULT_IMAGE = "ghcr.io/meetingbots/scheduledbot-operator:0.1.0"


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"SCHEDULEDBOT_{name}", default)


def env_int(name: str, default: int) -> int:
    """The variable as a whole number; `default` when it is unset or empty."""
    return int(env(name) or default)


def env_float(name: str, default: float) -> float:
    """The variable as a number; `default` when it is unset or empty."""
    return float(env(name) or default)


def csv(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def bot_flags(add: Add) -> None:
    """What the bots are: where they are watched, their Pod, their defaults, their hosts."""
    add(
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="namespace to watch, repeatable; default: all namespaces [SCHEDULEDBOT_NAMESPACES, comma-separated]",
    )
    add(
        "--default-image",
        default=env("DEFAULT_IMAGE", DEFAULT_IMAGE),
        help="image of the default bot template (the demo bot) [SCHEDULEDBOT_DEFAULT_IMAGE]",
    )
    add(
        "--default-template-file",
        default=env("DEFAULT_TEMPLATE_FILE"),
        metavar="PATH",
        help="YAML PodTemplateSpec used when a ScheduledBot has no spec.template [SCHEDULEDBOT_DEFAULT_TEMPLATE_FILE]",
    )
    add(
        "--default-staging-lead-seconds",
        type=int,
        default=env_int("DEFAULT_STAGING_LEAD_SECONDS", 300),
        help="staging lead when spec.stagingLeadSeconds is absent [SCHEDULEDBOT_DEFAULT_STAGING_LEAD_SECONDS]",
    )
    add(
        "--default-join-deadline-seconds",
        type=int,
        default=env_int("DEFAULT_JOIN_DEADLINE_SECONDS", 120),
        help="how late a join may still happen when spec.joinDeadlineSeconds is absent "
        "[SCHEDULEDBOT_DEFAULT_JOIN_DEADLINE_SECONDS]",
    )
    add(
        "--default-max-duration-seconds",
        type=int,
        default=env_int("DEFAULT_MAX_DURATION_SECONDS", 14400),
        help="longest stay in a meeting when spec.maxDurationSeconds is absent "
        "[SCHEDULEDBOT_DEFAULT_MAX_DURATION_SECONDS]",
    )
    add(
        "--extra-meeting-hosts",
        default=env("EXTRA_MEETING_HOSTS", ""),
        metavar="HOST[:PORT],...",
        help="ADMIN ONLY, off by default: extra meeting hosts admitted as platform 'local' (http or https), "
        "for demos and tests with the local meeting server [SCHEDULEDBOT_EXTRA_MEETING_HOSTS]",
    )
    add(
        "--extra-feed-hosts",
        default=env("EXTRA_FEED_HOSTS", ""),
        metavar="HOST[:PORT],...",
        help="ADMIN ONLY, off by default: BotSchedule calendar feed hosts that may be fetched over http and on "
        "loopback, link-local or cluster addresses (SSRF guard), for tests with a local ICS server "
        "[SCHEDULEDBOT_EXTRA_FEED_HOSTS]",
    )
    add(
        "--self-join-delay-seconds",
        type=float,
        default=env_float("SELF_JOIN_DELAY_SECONDS", 2),
        help="delay after joinAt at which a bot joins on its own if no signal came "
        "[SCHEDULEDBOT_SELF_JOIN_DELAY_SECONDS]",
    )


def process_flags(add: Add) -> None:
    """The operator process itself: its log, its endpoints, its token key."""
    add("--log-level", default=env("LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING, ERROR [SCHEDULEDBOT_LOG_LEVEL]")
    add(
        "--log-format",
        default=env("LOG_FORMAT", "text"),
        choices=["text", "json"],
        help="text or json [SCHEDULEDBOT_LOG_FORMAT]",
    )
    add(
        "--health-listen",
        default=env("HEALTH_LISTEN", "127.0.0.1"),
        help="address /healthz binds; in a Pod, 0.0.0.0 so that the kubelet's probes reach it "
        "[SCHEDULEDBOT_HEALTH_LISTEN]",
    )
    add(
        "--metrics-listen",
        default=env("METRICS_LISTEN", "127.0.0.1"),
        help="address /metrics binds; in a Pod, 0.0.0.0 so that Prometheus reaches it [SCHEDULEDBOT_METRICS_LISTEN]",
    )
    add(
        "--token-key-file",
        default=env("TOKEN_KEY_FILE"),
        metavar="PATH",
        help=f"the key bot tokens are derived from (at least {MIN_KEY_BYTES} bytes; a Secret mounted as a file); "
        "without it, a fresh key per start, and bots staged before a restart no longer accept this operator's "
        "calls [SCHEDULEDBOT_TOKEN_KEY_FILE]",
    )
    add(
        "--health-port",
        type=int,
        default=env_int("HEALTH_PORT", 8081),
        help="port of /healthz (liveness and readiness) [SCHEDULEDBOT_HEALTH_PORT]",
    )
    add(
        "--metrics-port",
        type=int,
        default=env_int("METRICS_PORT", 8080),
        help="port of the Prometheus /metrics endpoint; 0 disables [SCHEDULEDBOT_METRICS_PORT]",
    )


def leader_flags(add: Add) -> None:
    """Leader election among replicas (runtime/leader.py)."""
    add(
        "--leader-elect",
        action="store_true",
        default=env("LEADER_ELECT", "off") == "on",
        help="run as one of several replicas: only the holder of a Lease writes, the others stand by with the "
        "same picture and the same armed joins [SCHEDULEDBOT_LEADER_ELECT=on]",
    )
    add(
        "--leader-election-namespace",
        default=env("LEADER_ELECTION_NAMESPACE"),
        metavar="NS",
        help="namespace of the Lease; default: the Pod's own (POD_NAMESPACE), else default "
        "[SCHEDULEDBOT_LEADER_ELECTION_NAMESPACE]",
    )
    add(
        "--leader-election-lease-name",
        default=env("LEADER_ELECTION_LEASE_NAME", "scheduledbot-operator"),
        metavar="NAME",
        help="name of the Lease; replicas of one installation share it [SCHEDULEDBOT_LEADER_ELECTION_LEASE_NAME]",
    )
    add(
        "--leader-election-lease-duration",
        type=float,
        default=env_float("LEADER_ELECTION_LEASE_DURATION", DEFAULT_LEASE_DURATION),
        metavar="SECONDS",
        help="how long a standby waits, after it last saw the Lease renewed, before it takes over (whole seconds) "
        "[SCHEDULEDBOT_LEADER_ELECTION_LEASE_DURATION]",
    )
    add(
        "--leader-election-renew-deadline",
        type=float,
        default=env_float("LEADER_ELECTION_RENEW_DEADLINE", DEFAULT_RENEW_DEADLINE),
        metavar="SECONDS",
        help="how long the leader keeps writing without a successful renewal; shorter than the lease duration "
        "[SCHEDULEDBOT_LEADER_ELECTION_RENEW_DEADLINE]",
    )
    add(
        "--leader-election-retry-period",
        type=float,
        default=env_float("LEADER_ELECTION_RETRY_PERIOD", DEFAULT_RETRY_PERIOD),
        metavar="SECONDS",
        help="how often the leader renews and a standby looks at the Lease [SCHEDULEDBOT_LEADER_ELECTION_RETRY_PERIOD]",
    )
