"""The admission webhook's TLS and its ValidatingWebhookConfiguration.

How the certificate is made and rotated
=======================================
At every start the operator makes a fresh CA and a serving certificate signed by it
(one year; names: the webhook host, or the Service's DNS names), writes them to the
certificate directory for kopf's webhook server, and puts the CA into the
configuration's `caBundle`. Nothing is stored in the cluster and there is no
certificate to renew by hand: a restart rotates it.

Why failurePolicy Ignore
========================
The rules the webhook adds (no `joinAt` in the past, a supported platform) are also
enforced by the operator as a backstop (the bot fails with a clear reason). With
`Fail`, an operator outage would block every `kubectl apply` of a ScheduledBot, and
GitOps syncs with it; with `Ignore`, bad bots are still caught, only a moment later.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scheduledbot.api.resource import GROUP, PLURAL, VERSION

WEBHOOK_PATH: Final = "validate"
WEBHOOK_NAME: Final = "validate.scheduledbots.meetingbots.dev"


def make_certificates(directory: Path, *, names: list[str], now: dt.datetime) -> tuple[Path, Path, bytes]:
    """Write a serving certificate and key for `names`; returns (cert, key, CA PEM)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scheduledbot-operator webhook CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
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
        .not_valid_after(now + dt.timedelta(days=365))
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
    *, name: str, ca_pem: bytes, host: str, port: int, service: str | None, namespaces: tuple[str, ...]
) -> dict[str, Any]:
    if service:
        svc_namespace, _, svc_name = service.partition("/")
        client: dict[str, Any] = {
            "service": {"namespace": svc_namespace, "name": svc_name, "port": 443, "path": f"/{WEBHOOK_PATH}"}
        }
    else:
        client = {"url": f"https://{host}:{port}/{WEBHOOK_PATH}"}
    client["caBundle"] = base64.b64encode(ca_pem).decode()
    webhook: dict[str, Any] = {
        "name": WEBHOOK_NAME,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Ignore",
        "timeoutSeconds": 5,
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
        "clientConfig": client,
    }
    if namespaces:
        webhook["namespaceSelector"] = {
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": sorted(namespaces)}]
        }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "scheduledbot-operator"}},
        "webhooks": [webhook],
    }
