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
    Column("password_hash", String(255), nullable=True),  # the console's login (scrypt); None: API key only
)

# The console's logins (docs/console.md): a session is its cookie's SHA-256, ended by logout or by its expiry.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", LargeBinary(32), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("csrf", String(64), nullable=False),  # the token every form of the session carries
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
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
    # What the product is (cloud_bridge/products.py, docs/products.md). The protocol fixes the PID's length.
    Column("model_no", String(64), nullable=False),  # the owner's internal model number, unique per owner
    Column("protocol", String(8), nullable=False),  # wifi, ble, zigbee
    Column("firmware", String(8), nullable=False),  # oem, mcu, custom
    Column("firmware_version", String(32), nullable=False, default=""),
    Column("data_points", Text, nullable=False, default="[]"),  # canonical JSON list
    Column("panel", String(128), nullable=False, default=""),
    Column("module", String(64), nullable=False, default=""),
    Column("services", Text, nullable=False, default=""),  # enabled services, comma-separated, sorted
    # Whose the finished goods' data is (the owner, or the customer of an OEM link's factory).
    Column("data_owner", Integer, ForeignKey("organisations.id"), nullable=False),
    # A product made from an OEM link: the factory organisation that manages it, and the product it copies.
    Column("managed_by", Integer, ForeignKey("organisations.id"), index=True),
    Column("source_pid", String(16)),
    UniqueConstraint("org_id", "model_no", name="uq_products_org_model"),
)

# Every PID the platform ever issued, kept after its product is deleted, so no PID is issued twice.
issued_pids = Table(
    "issued_pids",
    metadata,
    Column("pid", String(16), primary_key=True),
    Column("org_id", Integer, ForeignKey("organisations.id"), nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("deleted_at", BigInteger),
)

# OEM links: a factory's single-use, expiring invitation to copy one of its products to a customer; stored as
# SHA-256 of the token only.
oem_links = Table(
    "oem_links",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", LargeBinary(32), unique=True, nullable=False),
    Column("pid", String(16), ForeignKey("products.pid"), nullable=False, index=True),  # the factory's product
    Column("org_id", Integer, ForeignKey("organisations.id"), nullable=False, index=True),  # the factory
    Column("created_by", Integer, ForeignKey("accounts.id")),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger),
    Column("used_by", Integer, ForeignKey("accounts.id")),
    Column("new_pid", String(16), ForeignKey("products.pid")),  # the customer's product it made
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
    Column("gw", String(16), primary_key=True),  # hex of the kid of the key it registered with
    Column("public_key", LargeBinary(32), nullable=False),  # its current key; unique in gateway_keys
    Column("name", String(128), nullable=False, default=""),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("registered_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
    Column("org_id", Integer, ForeignKey("organisations.id"), index=True),  # None: registered by the platform
    # A fork froze the gateway: no leases, no spends at or after `frozen_seq` count, until an admin reinstates it.
    Column("frozen_at", BigInteger),
    Column("frozen_seq", BigInteger),
)

# Every key a gateway has had (docs/enrolment.md, "Key rotation"): a key may sign checkpoints of seqs
# [from_seq, to_seq]; to_seq is None while it is the current one (which gateways.public_key also holds).
gateway_keys = Table(
    "gateway_keys",
    metadata,
    Column("kid", String(16), primary_key=True),  # hex of wire.keys.kid_of
    Column("gw", String(16), ForeignKey("gateways.gw"), nullable=False, index=True),
    Column("public_key", LargeBinary(32), unique=True, nullable=False),
    Column("from_seq", BigInteger, nullable=False),
    Column("to_seq", BigInteger),
    Column("introduced_at", BigInteger, nullable=False),
    Column("retired_at", BigInteger),
    Column("introduction", LargeBinary),  # the signed wire.key_rotation.KeyIntroduction; None: the enrolled key
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

# The purchase module (cloud_bridge/orders.py). An organisation a platform admin certified may order.
enterprise_certifications = Table(
    "enterprise_certifications",
    metadata,
    Column("org_id", Integer, ForeignKey("organisations.id"), primary_key=True),
    Column("certified_by", String(128), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("certified_at", BigInteger, nullable=False),
)

# Who may order which product: kind "buyer" (bulk orders, services) or "rnd" (R&D staff: development orders too).
order_grants = Table(
    "order_grants",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("pid", String(16), ForeignKey("products.pid"), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("granted_by", String(128), nullable=False),
    Column("granted_at", BigInteger, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_no", String(12), unique=True),  # "OR" + the id, set in the same transaction
    Column("org_id", Integer, ForeignKey("organisations.id"), nullable=False, index=True),  # who orders
    Column("pid", String(16), ForeignKey("products.pid"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # rnd_product, debug_module, bulk, value_added
    Column("stage", String(16), nullable=False),  # the product's stage at submission
    Column("quantity", Integer, nullable=False),
    Column("service", String(128), nullable=False, default=""),  # value-added orders: which service
    Column("snapshot", Text, nullable=False),  # the product's configuration at submission, canonical JSON
    # SHA-256 of the snapshot with the PO, model and material numbers: an order repeating it is warned about.
    Column("fingerprint", LargeBinary(32), nullable=False),
    Column("po_no", String(64), nullable=False),
    Column("batch_no", String(64), nullable=False, default=""),
    Column("model_no", String(64), nullable=False),
    Column("material_no", String(64), nullable=False),
    Column("delivery_address", Text, nullable=False, default=""),
    Column("invoice_title", String(128), nullable=False, default=""),
    Column("invoice_tax_no", String(64), nullable=False, default=""),
    Column("state", String(16), nullable=False),
    Column("revision", Integer, nullable=False, default=0),  # +1 on every step: two racing steps, one wins
    Column("price_cents", BigInteger),
    Column("currency", String(3)),
    Column("software_version", String(64)),
    Column("contract_no", String(64)),
    Column("pay_method", String(8)),  # online or offline: one order never mixes them
    Column("paid_cents", BigInteger, nullable=False, default=0),
    Column("ship_batches", Text),  # batch numbers shipped, comma-separated
    Column("carrier", String(64)),
    Column("tracking_no", String(64)),
    Column("invoice_no", String(64)),
    Column("cert_no", String(12), ForeignKey("certificates.cert_no"), unique=True),  # the certificate applied for it
    Column("created_by", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_orders_org_fingerprint", "org_id", "fingerprint"),
)

# Every step of an order, for audit and the order's history page.
order_events = Table(
    "order_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", Integer, ForeignKey("orders.id"), nullable=False, index=True),
    Column("action", String(24), nullable=False),
    Column("from_state", String(16), nullable=False),
    Column("to_state", String(16), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("detail", Text, nullable=False, default=""),  # what the step recorded, JSON
    Column("at", BigInteger, nullable=False),
)

__all__ = [
    "accounts",
    "activations",
    "anomalies",
    "cert_counts",
    "certificates",
    "confirmations",
    "console_sessions",
    "enrolment_tokens",
    "enterprise_certifications",
    "forked_records",
    "gateway_events",
    "gateway_heads",
    "gateways",
    "issued_pids",
    "issuer_keys",
    "leases",
    "metadata",
    "oem_links",
    "order_events",
    "order_grants",
    "orders",
    "organisations",
    "products",
    "records",
    "request_nonces",
    "slot_holds",
]
