"""The lab's certificate authority: istiod's self-signed root and the workload certificates it signs.

As Istio's (security/pkg/pki/util/generate_cert.go, pkg/cmd constants): the root is self-signed with O=cluster.local
and lives 10 years; a workload certificate has an empty subject, its SPIFFE id
spiffe://cluster.local/ns/NAMESPACE/sa/SERVICE_ACCOUNT as a critical URI SAN, serves both as server and client
(TLS Web Server/Client Authentication) and lives 24 hours (SECRET_TTL). Keys are ECDSA P-256 (Istio's
ECC_SIGNATURE_ALGORITHM option; its default RSA-2048 costs ~50 ms per pod to generate).

Files, in the lab's state directory only, keys mode 0600: pki/root-cert.pem and pki/root-key.pem; per sidecar
pki/<pod>/cert-chain.pem, key.pem, root-cert.pem (the names istio-agent writes for file-mounted certificates),
owned by the proxy's uid so that it can load them again when it reloads.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netlab.mesh.workload import TRUST_DOMAIN, spiffe_id

ROOT_TTL = datetime.timedelta(days=3650)
WORKLOAD_TTL = datetime.timedelta(hours=24)
CLOCK_SKEW = datetime.timedelta(minutes=1)  # not-before a little in the past, as Istio's CA does
CERT_CHAIN, KEY, ROOT_CERT = "cert-chain.pem", "key.pem", "root-cert.pem"


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
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @property
    def root_path(self) -> Path:
        return self.directory / ROOT_CERT

    def create(self) -> None:
        """A new self-signed root. The directory is root's, 0711: the proxies (uid 1337) pass through it to their
        own directories and cannot list it."""
        self.directory.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o711)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN)])
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

    def issue(self, pod_directory: str | Path, namespace: str, service_account: str, uid: int, gid: int,
              ttl: datetime.timedelta = WORKLOAD_TTL) -> Path:
        """A workload certificate and key for the SPIFFE id, with the root, in pod_directory (replaced whole:
        this is also the rotation)."""
        root_pem = self.root_path.read_bytes()
        root = x509.load_pem_x509_certificate(root_pem)
        root_key = serialization.load_pem_private_key((self.directory / "root-key.pem").read_bytes(), None)
        assert isinstance(root_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(root.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + ttl)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(spiffe_id(namespace, service_account))]), critical=True)
                .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                               critical=False)
                .sign(root_key, hashes.SHA256()))
        directory = Path(pod_directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(directory, uid, gid)
        os.chmod(directory, 0o700)
        _write(directory / KEY, _pem_key(key), 0o600, uid, gid)
        _write(directory / CERT_CHAIN, cert.public_bytes(serialization.Encoding.PEM), 0o644, uid, gid)
        _write(directory / ROOT_CERT, root_pem, 0o644, uid, gid)
        return directory


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
                san = [str(u) for u in cert.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)]
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
