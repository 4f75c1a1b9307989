"""SQLAlchemy Core tables. Alembic migrations in `cloud_bridge/migrations/` create them; keep both in step."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

# Named constraints so Alembic can alter them on SQLite (batch mode) and PostgreSQL alike.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

organisations = Table(
    "organisations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), unique=True, nullable=False),
    Column("kind", String(16), nullable=False),  # platform, factory, brand
    Column("created_at", BigInteger, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_id", Integer, ForeignKey("organisations.id"), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("key_hash", LargeBinary(32), unique=True, nullable=False),  # SHA-256 of a 256-bit random key
    Column("key_prefix", String(12), nullable=False),  # shown in lists, so people can tell keys apart
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
)

products = Table(
    "products",
    metadata,
    Column("pid", String(16), primary_key=True),
    Column("org_id", Integer, ForeignKey("organisations.id"), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("stage", String(16), nullable=False),  # development, trial, mass
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

issuer_keys = Table(
    "issuer_keys",
    metadata,
    Column("kid", String(16), primary_key=True),  # hex of wire.keys.kid_of
    Column("public_key", LargeBinary(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
)

certificates = Table(
    "certificates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("cert_no", String(12), unique=True),  # "RC" + the id, set in the same transaction
    Column("factory", String(64), nullable=False),
    Column("original_pid", String(16), nullable=False),
    Column("new_pid", String(16), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("protocols", String(64), nullable=False),  # comma-separated
    Column("reason", Text, nullable=False, default=""),
    Column("applicant", String(128), nullable=False, default=""),
    Column("status", String(16), nullable=False),  # pending, approved, rejected, revoked
    Column("audit_comment", Text, nullable=False, default=""),
    Column("auditor", String(128), nullable=False, default=""),
    Column("valid_s", BigInteger, nullable=False),
    Column("nbf", BigInteger),
    Column("exp", BigInteger),
    Column("token", LargeBinary),
    Column("token_hash", LargeBinary(32)),
    Column("issuer_kid", String(16)),
    Column("created_at", BigInteger, nullable=False),
    Column("decided_at", BigInteger),
    Column("org_id", Integer, ForeignKey("organisations.id"), index=True),  # the applicant; None: old platform issue
    # Who owned the original and the new product when the application was made: with the applicant, the only
    # organisations that may read the certificate and its leases (a PID registered later gains no reader).
    Column("original_org_id", Integer, ForeignKey("organisations.id"), index=True),
    Column("new_org_id", Integer, ForeignKey("organisations.id"), index=True),
)

gateways = Table(
    "gateways",
    metadata,
    Column("gw", String(16), primary_key=True),  # hex of the gateway key's kid
    Column("public_key", LargeBinary(32), unique=True, nullable=False),
    Column("name", String(128), nullable=False, default=""),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("registered_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
    Column("org_id", Integer, ForeignKey("organisations.id"), index=True),  # None: registered by the platform
    # A fork froze the gateway: no leases, no spends at or after `frozen_seq` count, until an admin reinstates it.
    Column("frozen_at", BigInteger),
    Column("frozen_seq", BigInteger),
)

# What happened to a gateway, for audit: frozen (with the fork's seq), reinstated, lease written off.
gateway_events = Table(
    "gateway_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("gw", String(16), ForeignKey("gateways.gw"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("seq", BigInteger),
    Column("lease_id", String(10)),
    Column("actor", String(128), nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
    Column("at", BigInteger, nullable=False),
)

# One-time enrolment tokens a factory admin hands to a gateway: stored as SHA-256, used once, expiring.
enrolment_tokens = Table(
    "enrolment_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", LargeBinary(32), unique=True, nullable=False),
    Column("org_id", Integer, ForeignKey("organisations.id"), nullable=False, index=True),
    Column("line", String(128), nullable=False, default=""),  # the gateway's name once enrolled
    Column("created_by", Integer, ForeignKey("accounts.id")),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger),
    Column("gw", String(16), ForeignKey("gateways.gw")),  # the gateway it enrolled
)

# Nonces of signed gateway requests seen within the replay window; older ones are pruned.
request_nonces = Table(
    "request_nonces",
    metadata,
    Column("gw", String(16), ForeignKey("gateways.gw"), primary_key=True),
    Column("nonce", LargeBinary(16), primary_key=True),
    Column("at", BigInteger, nullable=False, index=True),
)

gateway_heads = Table(
    "gateway_heads",
    metadata,
    Column("gw", String(16), ForeignKey("gateways.gw"), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("head", LargeBinary(32), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # Set when an admin rebased the chain (reinstatement): the worker publishes a fresh ack of the new head.
    Column("ack_due", Boolean, nullable=False, default=False, server_default=false()),
)

leases = Table(
    "leases",
    metadata,
    Column("lease_id", String(10), primary_key=True),
    Column("cert_no", String(12), ForeignKey("certificates.cert_no"), nullable=False, index=True),
    Column("gw", String(16), ForeignKey("gateways.gw"), nullable=False, index=True),
    Column("slot_lo", Integer, nullable=False),
    Column("slot_hi", Integer, nullable=False),
    Column("exp", BigInteger, nullable=False),
    Column("token", LargeBinary, nullable=False),
    Column("state", String(16), nullable=False),  # active, closed, written_off, revoked
    Column("issued_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger),
    # No record on the lease after this seq of its gateway's chain counts: its `closed` record, or the stored
    # head when it was written off.
    Column("closed_seq", BigInteger),
    Column("returned", Integer),  # slots that went back to the certificate when it ended
    Column("ended_by", String(128)),  # the account that wrote it off
    Column("end_reason", Text),
)

# Which slots of a certificate are taken: an active lease holds its whole range; an ended lease keeps only the
# slots that may have been spent. Free slots are the complement within [0, quantity).
slot_holds = Table(
    "slot_holds",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("cert_no", String(12), ForeignKey("certificates.cert_no"), nullable=False, index=True),
    Column("lease_id", String(10), ForeignKey("leases.lease_id"), nullable=False, index=True),
    Column("lo", Integer, nullable=False),
    Column("hi", Integer, nullable=False),
)

records = Table(
    "records",
    metadata,
    Column("gw", String(16), ForeignKey("gateways.gw"), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("digest", LargeBinary(32), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("lease_id", String(16), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("sn", String(28), nullable=False),
    Column("old_pid", String(16), nullable=False),
    Column("new_pid", String(16), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("counted", Boolean, nullable=False),  # a confirmed record that passed every ledger check
    Column("received_at", BigInteger, nullable=False),
    Index("ix_records_lease_slot", "lease_id", "slot"),
)

# Records of a gateway's chain past a fork point, moved aside when an admin reinstated the gateway on the
# gateway's own branch: kept as evidence, and still read when deciding which slots of a lease were used.
forked_records = Table(
    "forked_records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("gw", String(16), ForeignKey("gateways.gw"), nullable=False, index=True),
    Column("seq", BigInteger, nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("lease_id", String(16), nullable=False, index=True),
    Column("slot", Integer, nullable=False),
    Column("sn", String(28), nullable=False),
    Column("counted", Boolean, nullable=False),
    Column("forked_at", BigInteger, nullable=False),
)

# One row per (lease, slot) confirmed by a verified record: what the counts are made of.
confirmations = Table(
    "confirmations",
    metadata,
    Column("lease_id", String(10), ForeignKey("leases.lease_id"), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("cert_no", String(12), ForeignKey("certificates.cert_no"), nullable=False),
    Column("sn", String(28), nullable=False),
    Column("gw", String(16), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("at", BigInteger, nullable=False),
    Index("ix_confirmations_cert_sn", "cert_no", "sn"),
    # The invariant's backstop: a slot of a certificate is confirmed once, whichever lease held it.
    UniqueConstraint("cert_no", "slot", name="uq_confirmations_cert_slot"),
)

# Confirmations counted per certificate and gateway, kept in step with `confirmations` in the same transaction:
# progress reads a handful of rows instead of counting every confirmation, and each gateway updates only its own
# row (its head lock already serialises it), so workers do not queue on one hot counter.
cert_counts = Table(
    "cert_counts",
    metadata,
    Column("cert_no", String(12), ForeignKey("certificates.cert_no"), primary_key=True),
    Column("gw", String(16), ForeignKey("gateways.gw"), primary_key=True),
    Column("confirmed", BigInteger, nullable=False),
)

# One row per slot activated in the field: each (certificate, slot) and each (certificate, SN) activates once.
activations = Table(
    "activations",
    metadata,
    Column("lease_id", String(10), ForeignKey("leases.lease_id"), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("cert_no", String(12), ForeignKey("certificates.cert_no"), nullable=False),
    Column("sn", String(28), nullable=False),
    Column("pid", String(16), nullable=False),
    Column("at", BigInteger, nullable=False),
    UniqueConstraint("cert_no", "sn", name="uq_activations_cert_sn"),
    UniqueConstraint("cert_no", "slot", name="uq_activations_cert_slot"),
)

anomalies = Table(
    "anomalies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False, index=True),
    Column("gw", String(64)),
    Column("seq", BigInteger),
    Column("cert_no", String(12)),
    Column("lease_id", String(16)),
    Column("slot", Integer),
    Column("sn", String(28)),
    Column("message", Text, nullable=False),
    Column("payload", LargeBinary),  # the offending bytes, kept as evidence (bounded by the MQTT size limit)
    Column("at", BigInteger, nullable=False),
)

__all__ = [
    "accounts",
    "activations",
    "anomalies",
    "cert_counts",
    "certificates",
    "confirmations",
    "enrolment_tokens",
    "forked_records",
    "gateway_events",
    "gateway_heads",
    "gateways",
    "issuer_keys",
    "leases",
    "metadata",
    "organisations",
    "products",
    "records",
    "request_nonces",
    "slot_holds",
]
