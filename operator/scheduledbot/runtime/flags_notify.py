"""The notifications' flags (docs/notifications.md), each defaulting to its SCHEDULEDBOT_ variable."""

from __future__ import annotations

from scheduledbot.runtime.flags import Add, env, env_float, env_int


def notify_flags(add: Add) -> None:
    add(
        "--default-notify-url",
        default=env("DEFAULT_NOTIFY_URL"),
        metavar="URL",
        help="sink of the state-change notifications of bots without spec.notify.url; needs "
        "--default-notify-signing-key-file [SCHEDULEDBOT_DEFAULT_NOTIFY_URL]",
    )
    add(
        "--default-notify-signing-key-file",
        default=env("DEFAULT_NOTIFY_SIGNING_KEY_FILE"),
        metavar="PATH",
        help="file holding the default sink's signing key (whsec_...), read at start-up "
        "[SCHEDULEDBOT_DEFAULT_NOTIFY_SIGNING_KEY_FILE]",
    )
    add(
        "--extra-notify-hosts",
        default=env("EXTRA_NOTIFY_HOSTS", ""),
        metavar="HOST[:PORT],...",
        help="ADMIN ONLY, off by default: notification sink hosts admitted over http and at any address "
        "(loopback, cluster-internal), for demos and tests with a local receiver [SCHEDULEDBOT_EXTRA_NOTIFY_HOSTS]",
    )
    add(
        "--notify-denied-networks",
        default=env("NOTIFY_DENIED_NETWORKS", ""),
        metavar="CIDR,...",
        help="more networks a sink may not resolve to, beside loopback, link-local, private and reserved "
        "ranges (a cluster that uses public ranges inside) [SCHEDULEDBOT_NOTIFY_DENIED_NETWORKS]",
    )
    add(
        "--notify-concurrency",
        type=int,
        default=env_int("NOTIFY_CONCURRENCY", 16),
        help="notifications in flight at once, all bots together [SCHEDULEDBOT_NOTIFY_CONCURRENCY]",
    )
    add(
        "--notify-max-retry-seconds",
        type=float,
        default=env_float("NOTIFY_MAX_RETRY_SECONDS", 86400),
        help="how long a state change is retried before it is given up [SCHEDULEDBOT_NOTIFY_MAX_RETRY_SECONDS]",
    )
