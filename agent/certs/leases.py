"""Checks of a certificate and lease before the gateway uses them: kind, kid, signature, binding, window, hash."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from agent.errors import LeaseError
from wire.errors import BadSignatureError, MalformedError, UnknownKeyError, WireError, WrongKindError
from wire.keys import KeyRing, PublicKey
from wire.refusals import RefusalReason
from wire.times import utc_iso
from wire.tokens import Certificate, Lease, LeaseBundle, decode_bundle, token_hash, verify

T = TypeVar("T", Lease, Certificate)


@dataclass(frozen=True)
class CheckedLease:
    """A lease and its certificate that passed every check, with their exact tokens."""

    lease: Lease
    lease_token: bytes
    cert: Certificate
    cert_token: bytes


def _verify(token: bytes, cls: type[T], issuers: KeyRing) -> T:
    what = cls.__name__.lower()
    try:
        return verify(token, cls, issuers)
    except UnknownKeyError as exc:
        raise LeaseError(
            f"{what} is signed by key {exc.kid.hex() if exc.kid else '?'}, which this gateway does not pin; "
            "check trust.issuer_keys",
            reason=RefusalReason.UNKNOWN_KEY,
        ) from exc
    except WrongKindError as exc:
        raise LeaseError(f"not a {what}: {exc}", reason=RefusalReason.WRONG_KIND) from exc
    except BadSignatureError as exc:
        raise LeaseError(f"{what} signature is forged or damaged: {exc}", reason=RefusalReason.BAD_SIGNATURE) from exc
    except MalformedError as exc:
        raise LeaseError(f"{what} is malformed: {exc}", reason=RefusalReason.MALFORMED) from exc


def check_lease(
    lease_token: bytes, cert_token: bytes, issuers: KeyRing, gateway: PublicKey, now: float
) -> CheckedLease:
    """Verify both tokens and every binding between them and this gateway, at time `now`."""
    cert = _verify(cert_token, Certificate, issuers)
    lease = _verify(lease_token, Lease, issuers)
    if lease.cert_hash != token_hash(cert_token) or lease.cert_no != cert.cert_no:
        raise LeaseError(
            f"lease {lease.lease_id} names certificate {lease.cert_no} but not this certificate "
            f"({cert.cert_no}); load the certificate the platform issued with it",
            reason=RefusalReason.CERTIFICATE_MISMATCH,
        )
    if (lease.original_pid, lease.new_pid) != (cert.original_pid, cert.new_pid):
        raise LeaseError(
            f"lease {lease.lease_id} PIDs differ from its certificate's", reason=RefusalReason.CERTIFICATE_MISMATCH
        )
    if lease.gateway_key != gateway.raw or lease.gateway_kid != gateway.kid:
        raise LeaseError(
            f"lease {lease.lease_id} belongs to gateway {lease.gateway_kid.hex()}, not this one ({gateway.kid.hex()}); "
            "request a lease for this gateway",
            reason=RefusalReason.WRONG_GATEWAY,
        )
    if not 0 <= lease.slot_lo < lease.slot_hi <= cert.quantity:
        raise LeaseError(
            f"lease {lease.lease_id} slots lie outside its certificate", reason=RefusalReason.CERTIFICATE_MISMATCH
        )
    check_window(lease, cert, now)
    return CheckedLease(lease, lease_token, cert, cert_token)


def check_window(lease: Lease, cert: Certificate, now: float) -> None:
    """Refuse a certificate or lease outside its validity window at `now`."""
    if now < cert.nbf:
        raise LeaseError(
            f"certificate {cert.cert_no} is not valid before {utc_iso(cert.nbf)}; check the gateway's clock (NTP)",
            reason=RefusalReason.NOT_YET_VALID,
        )
    if now >= cert.exp:
        raise LeaseError(f"certificate {cert.cert_no} expired at {utc_iso(cert.exp)}", reason=RefusalReason.EXPIRED)
    if now >= lease.exp:
        raise LeaseError(
            f"lease {lease.lease_id} expired at {utc_iso(lease.exp)}; request a new lease from the platform",
            reason=RefusalReason.EXPIRED,
        )


def check_bundle(data: bytes, issuers: KeyRing, gateway: PublicKey, now: float) -> CheckedLease:
    """A lease file's bytes, fully checked."""
    try:
        bundle: LeaseBundle = decode_bundle(data)
    except WireError as exc:
        raise LeaseError(f"not a lease file: {exc}", reason=RefusalReason.MALFORMED) from exc
    return check_lease(bundle.lease, bundle.certificate, issuers, gateway, now)
