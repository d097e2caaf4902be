"""The lab's certificate authority: istiod's self-signed root and the workload certificates it signs.

As Istio's (security/pkg/pki/util/generate_cert.go, pkg/cmd constants): the root is self-signed with O=cluster.local
and lives 10 years; a workload certificate has an empty subject, its SPIFFE id
spiffe://cluster.local/ns/NAMESPACE/sa/SERVICE_ACCOUNT as a critical URI SAN, serves both as server and client
(TLS Web Server/Client Authentication) and lives 24 hours (SECRET_TTL). Keys are ECDSA P-256 (Istio's
ECC_SIGNATURE_ALGORITHM option; its default RSA-2048 costs ~50 ms per pod to generate).

Files, in the lab's state directory only, keys mode 0600: pki/root-cert.pem and pki/root-key.pem; per sidecar
pki/<pod>/cert-chain.pem, key.pem, root-cert.pem (the names istio-agent writes for file-mounted certificates),
owned by the proxy's uid so that it can load them again when it reloads.

The Secrets that Gateway servers name (tls.credentialName) are the lab's to make, as a user would with their own
domain's CA (Istio's secure-ingress task makes an example.com root with openssl): a second root, O=netlab gateway
credentials, in pki/gateway-ca/ (the file clients trust: `curl --cacert .../pki/gateway-ca/root-cert.pem`), signs
a server certificate for the server's hosts (DNS SANs), which each gateway pod holds as credentials/NAME/.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netlab.mesh.types import CA_CERT, TLS_CERT, TLS_KEY
from netlab.mesh.workload import TRUST_DOMAIN, spiffe_id

ROOT_TTL = datetime.timedelta(days=3650)
WORKLOAD_TTL = datetime.timedelta(hours=24)
CLOCK_SKEW = datetime.timedelta(minutes=1)  # not-before a little in the past, as Istio's CA does
CERT_CHAIN, KEY, ROOT_CERT = "cert-chain.pem", "key.pem", "root-cert.pem"
GATEWAY_CA = "gateway-ca"  # the root of Gateway credentials, beside the mesh's
CREDENTIAL_TTL = datetime.timedelta(days=90)


def _write(path: Path, data: bytes, mode: int, uid: int = 0, gid: int = 0) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    os.chown(path, uid, gid)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class LabCA:
    """A root and what it signs. `organization` names the root: the mesh's is O=cluster.local; the lab's second
    root, for Gateway credentials, stands for the CA a user's own domain certificate would come from."""

    def __init__(self, directory: str | Path, organization: str = TRUST_DOMAIN) -> None:
        self.directory = Path(directory)
        self.organization = organization

    @property
    def root_path(self) -> Path:
        return self.directory / ROOT_CERT

    def create(self) -> None:
        """A new self-signed root. The directory is root's, 0711: the proxies (uid 1337) pass through it to their
        own directories and cannot list it."""
        self.directory.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o711)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - CLOCK_SKEW)
                .not_valid_after(now + ROOT_TTL)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                               critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        _write(self.directory / "root-key.pem", _pem_key(key), 0o600)
        _write(self.root_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def _sign(self, subject: x509.Name, san: x509.SubjectAlternativeName, san_critical: bool,
              usages: list[x509.ObjectIdentifier], ttl: datetime.timedelta) -> tuple[bytes, bytes, bytes]:
        """A new key and a leaf certificate for it: (key PEM, certificate PEM, root PEM)."""
        root_pem = self.root_path.read_bytes()
        root = x509.load_pem_x509_certificate(root_pem)
        root_key = serialization.load_pem_private_key((self.directory / "root-key.pem").read_bytes(), None)
        assert isinstance(root_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(root.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + ttl)
                .add_extension(san, critical=san_critical)
                .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                               critical=False)
                .sign(root_key, hashes.SHA256()))
        return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM), root_pem

    def issue(self, pod_directory: str | Path, namespace: str, service_account: str, uid: int, gid: int,
              ttl: datetime.timedelta = WORKLOAD_TTL) -> Path:
        """A workload certificate and key for the SPIFFE id, with the root, in pod_directory (replaced whole:
        this is also the rotation)."""
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id(namespace, service_account))])
        key, cert, root = self._sign(x509.Name([]), san, True,
                                     [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], ttl)
        directory = _private_directory(pod_directory, uid, gid)
        _write(directory / KEY, key, 0o600, uid, gid)
        _write(directory / CERT_CHAIN, cert, 0o644, uid, gid)
        _write(directory / ROOT_CERT, root, 0o644, uid, gid)
        return directory

    def issue_server(self, directory: str | Path, hosts: Sequence[str], uid: int, gid: int,
                     ttl: datetime.timedelta = CREDENTIAL_TTL) -> Path:
        """A server certificate for DNS names (CN the first), as a kubernetes.io/tls Secret holds it: tls.crt,
        tls.key, and ca.crt (this root) in `directory`, replaced whole; `directory` and its parent belong to uid."""
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0]),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization)])
        san = x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts])
        key, cert, root = self._sign(subject, san, False, [ExtendedKeyUsageOID.SERVER_AUTH], ttl)
        _private_directory(Path(directory).parent, uid, gid)
        path = _private_directory(directory, uid, gid)
        _write(path / TLS_KEY, key, 0o600, uid, gid)
        _write(path / TLS_CERT, cert, 0o644, uid, gid)
        _write(path / CA_CERT, root, 0o644, uid, gid)
        return path


def _private_directory(directory: str | Path, uid: int, gid: int) -> Path:
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, 0o700)
    return path


def dns_names(path: str | Path) -> list[str]:
    """The DNS SANs of the certificate in a PEM file ([] when it cannot be read)."""
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return []


@dataclass(frozen=True)
class CertInfo:
    """What `netlab certs` shows of a certificate: never the key."""

    path: str
    subject: str
    issuer: str
    san: list[str]
    not_before: str
    not_after: str
    serial: str
    is_ca: bool

    @classmethod
    def read(cls, path: str | Path) -> list[CertInfo]:
        found = []
        for cert in x509.load_pem_x509_certificates(Path(path).read_bytes()):
            try:
                names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                san = [*names.get_values_for_type(x509.UniformResourceIdentifier),
                       *names.get_values_for_type(x509.DNSName)]
            except x509.ExtensionNotFound:
                san = []
            try:
                is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                is_ca = False
            found.append(cls(str(path), cert.subject.rfc4514_string() or "(empty)", cert.issuer.rfc4514_string(),
                             san, cert.not_valid_before_utc.isoformat(), cert.not_valid_after_utc.isoformat(),
                             f"{cert.serial_number:x}", is_ca))
        return found
