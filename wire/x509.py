"""X.509 for the broker's mTLS: the gateway's CSR and its check, and certificates signed by the platform's CA.

A gateway's client certificate carries its current Ed25519 gateway key and names the gateway: the CN is the gateway
id (the hex kid of the gateway's first key, kept across key rotations), so the identity the broker checks topics
against is the gateway whose current key signs the journal. No I/O here.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wire.errors import MalformedError
from wire.keys import PublicKey, SigningKey

# The broker takes the CN as the MQTT user name and puts it in topics: keep it to what a topic level may hold.
CN_PATTERN = re.compile(r"[a-z0-9-]{1,64}")
CA_NAME = "rebadge platform CA"
CA_VALID_S = 20 * 365 * 86400
# Certificates start a little in the past, so a gateway whose clock is slightly behind accepts them at once.
BACKDATE_S = 300

CaKey = ec.EllipticCurvePrivateKey
SubjectKey = Ed25519PublicKey | ec.EllipticCurvePublicKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _time(at: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(at, tz=datetime.UTC)


def check_cn(cn: str) -> str:
    """`cn` if it may name a broker identity; MalformedError otherwise."""
    if not CN_PATTERN.fullmatch(cn):
        raise MalformedError(f"common name {cn!r} is not 1 to 64 characters of a-z, 0-9 and '-'", field="csr")
    return cn


def gateway_csr(key: SigningKey, gw: str | None = None) -> bytes:
    """A PEM CSR signed by the gateway key, CN = the gateway id (`gw`; by default the key's kid)."""
    private = Ed25519PrivateKey.from_private_bytes(key.seed)
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(gw or key.kid.hex())).sign(private, None)
    return csr.public_bytes(serialization.Encoding.PEM)


def read_gateway_csr(pem: bytes) -> tuple[str, PublicKey]:
    """The CN and Ed25519 key of a well-signed CSR with one CN; MalformedError names what is wrong."""
    try:
        csr = x509.load_pem_x509_csr(pem)
        well_signed = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise MalformedError(f"csr is not a PEM certificate signing request ({exc})", field="csr") from exc
    if not well_signed:
        raise MalformedError("csr signature does not verify with its own public key", field="csr")
    public = csr.public_key()
    if not isinstance(public, Ed25519PublicKey):
        raise MalformedError("csr key is not Ed25519: sign it with the gateway key", field="csr")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise MalformedError("csr subject must hold exactly one common name, the gateway id", field="csr")
    return check_cn(names[0].value), PublicKey(public.public_bytes_raw())


def check_gateway_csr(pem: bytes, gw: str | None = None) -> PublicKey:
    """The key of a well-signed CSR whose CN is `gw` (by default: its key's kid, a gateway's first key)."""
    cn, key = read_gateway_csr(pem)
    expected = gw or key.kid.hex()
    if cn != expected:
        raise MalformedError(f"csr common name {cn!r} is not the gateway id {expected}", field="csr")
    return key


def new_ca_key() -> CaKey:
    """A fresh CA (or service) key: ECDSA P-256, which every broker's TLS stack takes."""
    return ec.generate_private_key(ec.SECP256R1())


def ca_certificate(key: CaKey, now: int) -> x509.Certificate:
    """The CA's self-signed certificate."""
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(CA_NAME))
        .issuer_name(_name(CA_NAME))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_time(now - BACKDATE_S))
        .not_valid_after(_time(now + CA_VALID_S))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),  # cert and CRL signing
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True)
class Leaf:
    """What a certificate the CA signs says: who, for how long, client or server, and the server's names."""

    cn: str
    valid_s: int
    server: bool = False
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()


def issue(ca_key: CaKey, ca_cert: x509.Certificate, subject: SubjectKey, leaf: Leaf, now: int) -> x509.Certificate:
    """A certificate for `subject` signed by the CA."""
    usage = ExtendedKeyUsageOID.SERVER_AUTH if leaf.server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(check_cn(leaf.cn)))
        .issuer_name(ca_cert.subject)
        .public_key(subject)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_time(now - BACKDATE_S))
        .not_valid_after(_time(now + leaf.valid_s))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in leaf.dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in leaf.ip_addresses]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    """A certificate in PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: CaKey | Ed25519PrivateKey) -> bytes:
    """A private key in unencrypted PKCS#8 PEM (its file is 0600)."""
    encoding, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(encoding, pkcs8, serialization.NoEncryption())


def gateway_key_pem(key: SigningKey) -> bytes:
    """The gateway key as PKCS#8 PEM: the same key as the raw seed, in the form TLS libraries load."""
    return key_pem(Ed25519PrivateKey.from_private_bytes(key.seed))


def load_ca_key(data: bytes) -> CaKey:
    """A CA key from PEM; MalformedError if it is not a P-256 key."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise MalformedError("CA key is not an ECDSA key", field="ca_key")
    return key


def in_force(cert: x509.Certificate, at: datetime.datetime) -> bool:
    """Whether `at` lies within the certificate's dates."""
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


def describe(cert: x509.Certificate) -> str:
    """Subject and validity, for error messages."""
    start = cert.not_valid_before_utc.isoformat(timespec="seconds")
    end = cert.not_valid_after_utc.isoformat(timespec="seconds")
    return f"subject {cert.subject.rfc4514_string()}, valid {start} to {end}"
