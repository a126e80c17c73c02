"""Certificates and keys of the local control plane.

Why generated here and not with openssl/cfssl: the `cryptography` package is
already a dependency, so the cluster needs no extra tool, and every start gets
a fresh CA (a cluster wiped and restarted never trusts an old client cert).

ECDSA P-256 everywhere: generating an RSA key costs ~0.1-1 s on a small
machine, an EC key a millisecond, and kube-apiserver accepts EC keys for
serving, client auth and service-account token signing (ES256).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The first address of --service-cluster-ip-range: the `kubernetes` Service.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
_VALIDITY = datetime.timedelta(days=365)
#: The common name of the client certificate the apiserver presents to admission webhooks.
WEBHOOK_CLIENT_NAME = "kube-apiserver-webhook-client"


@dataclass(frozen=True)
class Pki:
    """Paths of the files that `generate` writes under one directory."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def apiserver_kubelet_client_cert(self) -> Path:
        return self.dir / "apiserver-kubelet-client.crt"

    @property
    def apiserver_kubelet_client_key(self) -> Path:
        return self.dir / "apiserver-kubelet-client.key"

    @property
    def apiserver_webhook_client_cert(self) -> Path:
        return self.dir / "apiserver-webhook-client.crt"

    @property
    def apiserver_webhook_client_key(self) -> Path:
        return self.dir / "apiserver-webhook-client.key"

    @property
    def kubelet_cert(self) -> Path:
        return self.dir / "kubelet.crt"

    @property
    def kubelet_key(self) -> Path:
        return self.dir / "kubelet.key"

    @property
    def node_client_cert(self) -> Path:
        return self.dir / "node-client.crt"

    @property
    def node_client_key(self) -> Path:
        return self.dir / "node-client.key"

    @property
    def service_account_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.dir / "sa.pub"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool) -> None:
    path.write_bytes(data)
    path.chmod(0o600 if private else 0o644)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _certificate(
    *, subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, ca: bool
) -> x509.CertificateBuilder:
    """A certificate for `key`, to be signed: a CA's (signs certificates) or a leaf's (signs only)."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Back-dated a little: a freshly started component must not see a
        # "not yet valid" certificate because of sub-second clock reads.
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def _issue(
    *,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    builder = _certificate(subject=subject, issuer=ca_cert.subject, key=key, ca=False).add_extension(
        x509.ExtendedKeyUsage([usage]), critical=False
    )
    if dns_names or ip_addresses:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def generate(directory: Path, *, node_name: str = "local-node", extra_ips: tuple[str, ...] = ()) -> Pki:
    """Write a new CA and every certificate and key the cluster needs.

    `extra_ips`: addresses besides loopback that the API server and the
    kubelet serve on (a real node's own address).
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)

    ca_key = _new_key()
    ca_name = _name("localcluster-ca")
    ca_cert = (
        _certificate(subject=ca_name, issuer=ca_name, key=ca_key, ca=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(pki.ca_key, _key_pem(ca_key), private=True)

    server = ExtendedKeyUsageOID.SERVER_AUTH
    client = ExtendedKeyUsageOID.CLIENT_AUTH
    issued = {
        (pki.apiserver_cert, pki.apiserver_key): _issue(
            ca_cert=ca_cert,
            ca_key=ca_key,
            subject=_name("kube-apiserver"),
            usage=server,
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=("127.0.0.1", KUBERNETES_SERVICE_IP, *extra_ips),
        ),
        # system:masters bypasses RBAC: the admin of a development cluster.
        (pki.admin_cert, pki.admin_key): _issue(
            ca_cert=ca_cert, ca_key=ca_key, subject=_name("admin", "system:masters"), usage=client
        ),
        # The apiserver's identity when it proxies `kubectl logs` to the kubelet.
        (pki.apiserver_kubelet_client_cert, pki.apiserver_kubelet_client_key): _issue(
            ca_cert=ca_cert,
            ca_key=ca_key,
            subject=_name("kube-apiserver-kubelet-client", "system:masters"),
            usage=client,
        ),
        # The apiserver's identity when it calls admission webhooks (its admission
        # configuration names it), so that a webhook can tell it from other callers.
        (pki.apiserver_webhook_client_cert, pki.apiserver_webhook_client_key): _issue(
            ca_cert=ca_cert, ca_key=ca_key, subject=_name(WEBHOOK_CLIENT_NAME), usage=client
        ),
        (pki.kubelet_cert, pki.kubelet_key): _issue(
            ca_cert=ca_cert,
            ca_key=ca_key,
            subject=_name(node_name),
            usage=server,
            dns_names=("localhost", node_name),
            ip_addresses=("127.0.0.1", *extra_ips),
        ),
        # A real kubelet's identity, as the Node authorizer knows nodes.
        (pki.node_client_cert, pki.node_client_key): _issue(
            ca_cert=ca_cert, ca_key=ca_key, subject=_name(f"system:node:{node_name}", "system:nodes"), usage=client
        ),
    }
    for (cert_path, key_path), (cert, key) in issued.items():
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
        _write(key_path, _key_pem(key), private=True)

    sa_key = _new_key()
    _write(pki.service_account_key, _key_pem(sa_key), private=True)
    _write(
        pki.service_account_pub,
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        private=False,
    )
    return pki
