"""One webhook CA for all replicas (`--leader-elect` with `--webhook-configuration=patch`).

Why shared
==========
The API server trusts the one `caBundle` of the webhook configuration, and the
Service sends each review to either replica. A CA made by each replica at its start
(what a single replica does) would leave the other replica's certificate untrusted:
half the reviews would fail their TLS handshake, and with `failurePolicy: Fail`,
half the bots with an inline template would be refused.

So replicas share a CA, kept in a Secret in the operator's own namespace (the
Lease's): the first to start creates it (an AlreadyExists means another replica was
first: read it back), every replica signs its own serving certificate with it at
start, and they all set the same `caBundle`. The CA lasts ten years; each serving
certificate is still made anew at every start. To rotate the CA, delete the Secret
and restart the replicas (`kubectl rollout restart`): the first new Pod makes a new
one. The CA's key lets whoever holds it serve as this webhook, and nothing else
(the `caBundle` is this configuration's only): the Secret is readable by the
operator alone (docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scheduledbot.adapters.kube import Kube
from scheduledbot.runtime.webhook import Authority, make_authority

CA_DAYS: Final = 3650
_CERT, _KEY = "ca.crt", "ca.key"


def secret_name(config_name: str) -> str:
    """The Secret of the CA of the webhook configuration `config_name`."""
    return f"{config_name}-webhook-ca"


async def shared_authority(kube: Kube, *, namespace: str, name: str, now: dt.datetime) -> Authority:
    """The replicas' CA from the Secret `namespace/name`, made and stored if there is none yet."""
    found = await kube.read_webhook_ca(namespace, name)
    if found is None:
        made = make_authority(now=now, days=CA_DAYS)
        if await kube.create_webhook_ca(namespace, _secret(namespace, name, made)):
            return made
        found = await kube.read_webhook_ca(namespace, name)
        if found is None:
            raise RuntimeError(f"Secret {namespace}/{name} (the webhook CA) was created and deleted at once")
    return authority_of(found, where=f"Secret {namespace}/{name}", now=now)


def authority_of(secret: dict[str, Any], *, where: str, now: dt.datetime) -> Authority:
    """The CA a Secret holds; a clear error when it holds none usable."""
    data = secret.get("data") or {}
    try:
        cert = x509.load_pem_x509_certificate(base64.b64decode(data[_CERT]))
        key = serialization.load_pem_private_key(base64.b64decode(data[_KEY]), password=None)
    except (KeyError, TypeError, ValueError, binascii.Error) as error:
        raise ValueError(
            f"{where} must hold a PEM CA certificate ({_CERT}) and its EC key ({_KEY}): {error}; "
            "delete it and restart the replicas to make a new one"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or _public(key.public_key()) != _public(cert.public_key()):
        raise ValueError(f"{where}: {_KEY} is not the EC key of {_CERT}; delete it and restart the replicas")
    if cert.not_valid_after_utc <= now:
        raise ValueError(
            f"{where}: the webhook CA expired at {cert.not_valid_after_utc.isoformat()}; "
            "delete it and restart the replicas to make a new one"
        )
    return cert, key


def _public(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def _secret(namespace: str, name: str, authority: Authority) -> dict[str, Any]:
    cert, key = authority
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "scheduledbot-operator"},
        },
        "type": "Opaque",
        "data": {
            _CERT: base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode(),
            _KEY: base64.b64encode(pem_key).decode(),
        },
    }
