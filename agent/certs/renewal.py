"""Short-lived client certificates, renewed: before `cert_file` expires, ask the platform for a new one over the
existing mTLS session (`req/renew`, signed by the gateway key) and replace the file atomically.

The uplink builds its TLS context from the files at every connection, so the new certificate is used from the next
connection on; the open session goes on with the old one. Nothing here blocks scanning: a renewal that fails is
logged and asked again later, and the line keeps rebadging offline meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.certs.identity import GatewayIdentity
from agent.config import TlsConfig
from agent.errors import RenewalError, UplinkError
from agent.uplink.requests import Signed, signed_request
from durable.files import write_atomically
from wire import x509 as wx
from wire.lease_request import RenewAnswer, RenewRequest

log = logging.getLogger(__name__)

CERT_MODE = 0o644
# Look at cert_file again at least this often: someone may have enrolled again and replaced it.
MAX_WAIT_S = 3600.0


class Renewing(Protocol):
    """What the renewer asks through (the uplink)."""

    async def request_renew(self, signed: Signed[RenewRequest], timeout: float) -> RenewAnswer:
        """Send a signed renewal request and return the platform's answer."""
        ...


class CertificateRenewer:
    """Keeps `tls.cert_file` in force: renews `tls.renew_before_s` before it expires; `run()` until cancelled."""

    def __init__(
        self, tls: TlsConfig, identity: GatewayIdentity, requester: Renewing, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.tls = tls
        self.identity = identity
        self._requester = requester
        self._clock = clock
        self.renewed = 0  # certificates installed since start, for tests and health

    async def run(self) -> None:
        """Renew whenever the certificate comes due; wait `renew_retry_s` after a failed attempt."""
        while True:
            due_in = await asyncio.to_thread(self._due_in)
            if due_in > 0:
                await asyncio.sleep(min(due_in, MAX_WAIT_S))
                continue
            try:
                await self.renew()
            except UplinkError as exc:  # refused, unusable, or no answer (RequestTimeoutError)
                log.warning(
                    "certificate renewal of %s failed: %s; asking again in %.0f s (scans go on)",
                    self.tls.cert_file, exc, self.tls.renew_retry_s,
                )  # fmt: skip
                await asyncio.sleep(self.tls.renew_retry_s)
                continue
            if await asyncio.to_thread(self._due_in) <= 0:
                # The platform's certificates are shorter than renew_before_s: do not ask in a tight loop.
                log.warning(
                    "the renewed certificate is due again at once: mqtt.tls.renew_before_s (%.0f s) is longer than "
                    "the platform's certificates last; lower it. Asking again in %.0f s",
                    self.tls.renew_before_s, self.tls.renew_retry_s,
                )  # fmt: skip
                await asyncio.sleep(self.tls.renew_retry_s)

    def _due_in(self) -> float:
        """Seconds until the certificate is due for renewal (0 or less: now, also when the file is unreadable)."""
        try:
            cert = x509.load_pem_x509_certificate(self.tls.cert_file.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning(
                "mqtt.tls.cert_file %s cannot be read (%s); asking the platform for a new certificate",
                self.tls.cert_file,
                exc,
            )
            return 0.0
        return cert.not_valid_after_utc.timestamp() - self.tls.renew_before_s - self._clock()

    async def renew(self) -> x509.Certificate:
        """Ask for a new certificate now, check it and install it; RenewalError if refused or unusable."""
        key = self.identity.key
        gw = self.identity.gw
        signed = signed_request(RenewRequest, key, gw=gw, clock=self._clock, csr=wx.gateway_csr(key, gw))
        answer = await self._requester.request_renew(signed, self.tls.renew_timeout_s)
        if not answer.ok or answer.certificate is None:
            raise RenewalError(f"the platform refused to renew ({answer.code}): {answer.message}")
        cert = await asyncio.to_thread(self._install, answer.certificate)
        self.renewed += 1
        log.info("renewed the gateway's certificate: %s, written to %s", wx.describe(cert), self.tls.cert_file)
        return cert

    def _install(self, pem: bytes) -> x509.Certificate:
        try:
            cert = x509.load_pem_x509_certificate(pem)
            ca = x509.load_pem_x509_certificate(self.tls.ca_file.read_bytes())
            cert.verify_directly_issued_by(ca)
        except (OSError, ValueError, TypeError, InvalidSignature) as exc:
            raise RenewalError(f"the renewed certificate does not check against {self.tls.ca_file}: {exc}") from exc
        public = cert.public_key()
        if not isinstance(public, Ed25519PublicKey) or public.public_bytes_raw() != self.identity.public.raw:
            raise RenewalError(f"the renewed certificate ({wx.describe(cert)}) is not for this gateway's key")
        write_atomically(self.tls.cert_file, pem, CERT_MODE)
        return cert
