"""The platform's CA for the broker's mTLS: an ECDSA key and a self-signed certificate in the data dir, 0600."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from cloud_bridge.errors import ConfigError
from cloud_bridge.issuer import FILE_MODE, check_mode, ensure_data_dir
from durable.files import create_exclusively
from wire import x509 as wx
from wire.errors import MalformedError
from wire.keys import PublicKey

log = logging.getLogger(__name__)

CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"
DEFAULT_CLIENT_CERT_VALID_S = 7 * 86400


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA key and certificate; signs the gateways' client certificates."""

    key: wx.CaKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate, for gateways and the broker to trust."""
        return wx.pem(self.cert)

    def issue_gateway(self, gw: str, key: PublicKey, valid_s: int, now: int) -> x509.Certificate:
        """A client certificate for gateway `gw`'s current key, CN = the gateway id."""
        return wx.issue(self.key, self.cert, key.verifier(), wx.Leaf(cn=gw, valid_s=valid_s), now)


def load_or_create(data_dir: Path, now: int) -> CertificateAuthority:
    """The CA in `data_dir`, created on first use; files readable by others are refused."""
    ensure_data_dir(data_dir)
    key_path, cert_path = data_dir / CA_KEY_FILE, data_dir / CA_CERT_FILE
    if not key_path.exists() and not cert_path.exists():
        key = wx.new_ca_key()
        cert = wx.ca_certificate(key, now)
        create_exclusively(key_path, wx.key_pem(key), FILE_MODE)
        create_exclusively(cert_path, wx.pem(cert), FILE_MODE)
        log.info("created the platform CA %s", cert_path)
        return CertificateAuthority(key, cert)
    for path, what in ((key_path, "CA key file"), (cert_path, "CA certificate file")):
        if not path.exists():
            raise ConfigError(f"{what} {path} is missing while its pair exists; restore it from backup")
        check_mode(path, FILE_MODE, what)
    try:
        return CertificateAuthority(wx.load_ca_key(key_path.read_bytes()), x509.load_pem_x509_certificate(
            cert_path.read_bytes()))  # fmt: skip
    except (ValueError, MalformedError) as exc:
        raise ConfigError(f"the platform CA in {data_dir} cannot be read ({exc}); restore it from backup") from exc
