"""Test helpers that play the platform: an issuer key signing real certificates and leases."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from wire.keys import KeyRing, PublicKey, SigningKey
from wire.tokens import Certificate, Lease, LeaseBundle, ProtocolName, sign, token_hash

ORIGINAL_PID = "stock001"
NEW_PID = "brand001"


@dataclass
class Issuer:
    """A platform stand-in with a real issuer key (tests of the agent need signed tokens, not a platform)."""

    key: SigningKey = field(default_factory=SigningKey.generate)

    @property
    def ring(self) -> KeyRing:
        return KeyRing([self.key.public])

    def certificate(
        self, quantity: int = 10, *, cert_no: str = "RC000001",
        protocols: tuple[ProtocolName, ...] = ("wifi", "ble", "zigbee"),
        nbf: int | None = None, exp: int | None = None, original_pid: str = ORIGINAL_PID, new_pid: str = NEW_PID,
    ) -> tuple[Certificate, bytes]:  # fmt: skip
        now = int(time.time())
        cert = Certificate(
            cert_no=cert_no, factory="test-factory", original_pid=original_pid, new_pid=new_pid, quantity=quantity,
            protocols=protocols, nbf=now - 60 if nbf is None else nbf, exp=now + 86400 if exp is None else exp,
        )  # fmt: skip
        return cert, sign(cert, self.key)

    def lease(
        self, cert: Certificate, cert_token: bytes, gateway: PublicKey, lo: int = 0, hi: int | None = None,
        *, lease_id: str = "L0001", exp: int | None = None, signer: SigningKey | None = None,
    ) -> tuple[Lease, bytes]:  # fmt: skip
        lease = Lease(
            lease_id=lease_id, cert_no=cert.cert_no, cert_hash=token_hash(cert_token),
            original_pid=cert.original_pid, new_pid=cert.new_pid, gateway_key=gateway.raw, gateway_kid=gateway.kid,
            slot_lo=lo, slot_hi=cert.quantity if hi is None else hi,
            exp=int(time.time()) + 3600 if exp is None else exp,
        )  # fmt: skip
        return lease, sign(lease, signer or self.key)

    def bundle(self, gateway: PublicKey, quantity: int = 10, **lease_kw: object) -> bytes:
        cert, cert_token = self.certificate(quantity)
        _, lease_token = self.lease(cert, cert_token, gateway, **lease_kw)  # type: ignore[arg-type]
        return LeaseBundle(lease=lease_token, certificate=cert_token).to_cbor()
