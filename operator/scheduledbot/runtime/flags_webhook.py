"""The admission webhook's flags (runtime/webhook.py), each defaulting to its SCHEDULEDBOT_ variable."""

from __future__ import annotations

from scheduledbot.runtime.flags import Add, env, env_int


def webhook_flags(add: Add) -> None:
    add(
        "--no-webhook",
        action="store_true",
        default=env("WEBHOOK", "on") == "off",
        help="do not serve the admission webhook (the backstop still fails bad bots) [SCHEDULEDBOT_WEBHOOK=off]",
    )
    add(
        "--webhook-listen",
        default=env("WEBHOOK_LISTEN", "0.0.0.0"),
        help="address the webhook server binds [SCHEDULEDBOT_WEBHOOK_LISTEN]",
    )
    add(
        "--webhook-port",
        type=int,
        default=env_int("WEBHOOK_PORT", 9443),
        help="port the webhook server binds [SCHEDULEDBOT_WEBHOOK_PORT]",
    )
    add(
        "--webhook-host",
        default=env("WEBHOOK_HOST", "127.0.0.1"),
        help="host the API server dials when no --webhook-service is set [SCHEDULEDBOT_WEBHOOK_HOST]",
    )
    add(
        "--webhook-service",
        default=env("WEBHOOK_SERVICE"),
        metavar="NAMESPACE/NAME",
        help="in a cluster: the Service in front of the webhook (port 443) [SCHEDULEDBOT_WEBHOOK_SERVICE]",
    )
    add(
        "--webhook-config-name",
        default=env("WEBHOOK_CONFIG_NAME", "scheduledbot-operator"),
        help="name of the ValidatingWebhookConfiguration the operator manages [SCHEDULEDBOT_WEBHOOK_CONFIG_NAME]",
    )
    add(
        "--webhook-cert-dir",
        default=env("WEBHOOK_CERT_DIR"),
        metavar="DIR",
        help="where the serving certificate (tls.crt, tls.key) is written, or read with "
        "--webhook-configuration=external; default: a temporary directory [SCHEDULEDBOT_WEBHOOK_CERT_DIR]",
    )
    add(
        "--webhook-configuration",
        default=env("WEBHOOK_CONFIGURATION", "auto"),
        choices=["auto", "patch", "write", "external"],
        help="patch: make a certificate and set the caBundle of the installed configuration; write: make a "
        "certificate and write the whole configuration (development; needs create rights); external: serve the "
        "certificate found in --webhook-cert-dir and leave the configuration to others (cert-manager's CA "
        "injector); auto: write without --webhook-service, patch with it [SCHEDULEDBOT_WEBHOOK_CONFIGURATION]",
    )
    add(
        "--webhook-client-ca-file",
        default=env("WEBHOOK_CLIENT_CA_FILE"),
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
