"""The admission webhook's TLS and its ValidatingWebhookConfiguration.

Who writes the configuration
============================
The configuration is installed with the manifests (manifests/webhook/), by whoever
installs the operator; the operator only sets its `caBundle`, with a `patch` that
RBAC limits to that one name (`--webhook-configuration=patch`). It cannot create
admission configurations, so it cannot register a webhook on Secrets or Pods. With
cert-manager, the CA injector sets the caBundle and the operator serves the
certificate cert-manager wrote (`external`); the operator needs no right on the
configuration at all. Outside a cluster (`make run`, tests), the operator writes
the whole configuration itself (`write`), with its developer's credentials.

How the certificate is made and rotated
=======================================
With `patch` and `write`, at every start the operator makes a fresh CA and a
serving certificate signed by it (one year; names: the webhook host, or the
Service's DNS names), writes them to the certificate directory, and puts the CA
into the configuration's `caBundle`. Nothing is stored in the cluster and there is
no certificate to renew by hand: a restart rotates it. With `external`, a renewed
certificate is picked up at the next TLS handshake that names the server (SNI):
no timer, no restart.

Two webhooks, two failure policies
==================================
`validate.scheduledbots.meetingbots.dev` checks bots without an inline template:
its rules (no `joinAt` in the past, a supported platform, the class's limits) are
also enforced by the operator as a backstop, so an outage of the operator should
not block every `kubectl apply` and GitOps sync: `failurePolicy: Ignore`.
`templates.scheduledbots.meetingbots.dev` checks bots with an inline template, and
there the webhook is the only door: whether the author could create that Pod is
known only at admission (the author's identity is in the review, nowhere else).
So `failurePolicy: Fail`: while the operator is down, such bots wait.

matchConditions (evaluated by the API server, no call at all) skip what the webhook
would admit without a look anyway: updates that leave the spec as it was (the
operator's finalizer, labels, GitOps annotations) and any update of a bot being
deleted. They save a webhook call per metadata write and can never refuse the
operator's own finalizer removal; the webhook applies the same rule itself for API
servers that send such reviews anyway.

Who may call the webhook
========================
With `--webhook-client-ca-file`, the server requires a client certificate signed
by that CA (the API server presents one when its admission configuration names a
kubeconfig for webhooks), optionally with one of `--webhook-client-name`: nobody
else gets past the TLS handshake. Without it, the webhook answers anyone who can
reach it (the NetworkPolicy in manifests/networkpolicy/ limits that to the API
server), but does not dry-run the bot Pod with the operator's credentials, so a
forged review learns nothing about namespaces it names. docs/security.md has the
whole trust model.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scheduledbot.api.resource import GROUP, PLURAL, VERSION

WEBHOOK_PATH: Final = "validate"
WEBHOOK_NAME: Final = "validate.scheduledbots.meetingbots.dev"
TEMPLATE_WEBHOOK_NAME: Final = "templates.scheduledbots.meetingbots.dev"
WEBHOOK_NAMES: Final = (WEBHOOK_NAME, TEMPLATE_WEBHOOK_NAME)
#: Both webhooks: a CREATE, or an UPDATE that changes the spec of a bot not being deleted.
SPEC_CHANGED: Final = {
    "name": "spec-changed",
    "expression": "request.operation == 'CREATE' || "
    "(!has(oldObject.metadata.deletionTimestamp) && object.spec != oldObject.spec)",
}
_HAS_TEMPLATE: Final = "has(object.spec.template)"
#: The API server's own default; the access review and the dry run fit well within it.
TIMEOUT_SECONDS: Final = 10


#: A CA and its key: made at each start, or shared by replicas (runtime/webhook_ca.py).
Authority = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def make_authority(*, now: dt.datetime, days: int = 365) -> Authority:
    """A CA for the webhook's serving certificates, valid `days`."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scheduledbot-operator webhook CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return ca, ca_key


def make_certificates(
    directory: Path, *, names: list[str], now: dt.datetime, authority: Authority | None = None
) -> tuple[Path, Path, bytes]:
    """Write a serving certificate and key for `names`, signed by `authority` (default: a new CA);
    returns (cert, key, CA PEM)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = authority or make_authority(now=now)
    ca_name = ca.subject
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=365), ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path, ca.public_bytes(serialization.Encoding.PEM)


def service_names(service: str) -> list[str]:
    namespace, _, name = service.partition("/")
    return [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}"]


def build_configuration(
    *, name: str, ca_pem: bytes | None, host: str, port: int, service: str | None, namespaces: tuple[str, ...]
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration (manifests/webhook/ ships the same, with its Service)."""
    if service:
        svc_namespace, _, svc_name = service.partition("/")
        client: dict[str, Any] = {
            "service": {"namespace": svc_namespace, "name": svc_name, "port": 443, "path": f"/{WEBHOOK_PATH}"}
        }
    else:
        client = {"url": f"https://{host}:{port}/{WEBHOOK_PATH}"}
    if ca_pem is not None:
        client["caBundle"] = base64.b64encode(ca_pem).decode()

    def webhook(webhook_name: str, policy: str, has_template: bool) -> dict[str, Any]:
        template = {
            "name": "inline-template" if has_template else "no-inline-template",
            "expression": _HAS_TEMPLATE if has_template else f"!{_HAS_TEMPLATE}",
        }
        out: dict[str, Any] = {
            "name": webhook_name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": policy,
            "timeoutSeconds": TIMEOUT_SECONDS,
            "matchPolicy": "Equivalent",
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": [VERSION],
                    "resources": [PLURAL],
                    "operations": ["CREATE", "UPDATE"],
                    "scope": "Namespaced",
                }
            ],
            "matchConditions": [dict(SPEC_CHANGED), template],
            "clientConfig": dict(client),
        }
        if namespaces:
            out["namespaceSelector"] = {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": sorted(namespaces)}
                ]
            }
        return out

    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "scheduledbot-operator"}},
        "webhooks": [
            webhook(WEBHOOK_NAME, "Ignore", has_template=False),
            webhook(TEMPLATE_WEBHOOK_NAME, "Fail", has_template=True),
        ],
    }


def server_context(cert: Path, key: Path, *, client_ca: Path | None) -> ssl.SSLContext:
    """The webhook server's TLS: its certificate, and the API server's client certificate if configured.

    A certificate renewed on disk (cert-manager) is loaded at the next handshake that
    names the server: the SNI callback compares the files' modification times, which
    costs a stat per connection and no timer.
    """

    def fresh() -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            context.load_verify_locations(cafile=str(client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
        context.sni_callback = on_hello
        return context

    def stamp() -> tuple[int, int]:
        return cert.stat().st_mtime_ns, key.stat().st_mtime_ns

    loaded = {"stamp": stamp()}
    current: dict[str, ssl.SSLContext] = {}

    def on_hello(connection: ssl.SSLObject, _name: str | None, _context: ssl.SSLContext) -> None:
        try:
            now = stamp()
            if now != loaded["stamp"]:
                current["context"] = fresh()
                loaded["stamp"] = now
        except (OSError, ssl.SSLError):
            # Half-written files during a renewal: keep serving the certificate that works.
            return
        connection.context = current["context"]

    current["context"] = fresh()
    return current["context"]
