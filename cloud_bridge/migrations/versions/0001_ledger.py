"""ledger: issuer keys, certificates, gateways, leases, records, anomalies

Revision ID: 0001
Revises:
Create Date: 2026-11-23 12:03:45.712265
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "anomalies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("gw", sa.String(length=64), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("cert_no", sa.String(length=12), nullable=True),
        sa.Column("lease_id", sa.String(length=16), nullable=True),
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column("sn", sa.String(length=28), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anomalies")),
    )
    with op.batch_alter_table("anomalies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_anomalies_kind"), ["kind"], unique=False)

    op.create_table(
        "certificates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cert_no", sa.String(length=12), nullable=True),
        sa.Column("factory", sa.String(length=64), nullable=False),
        sa.Column("original_pid", sa.String(length=16), nullable=False),
        sa.Column("new_pid", sa.String(length=16), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("protocols", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("applicant", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("audit_comment", sa.Text(), nullable=False),
        sa.Column("auditor", sa.String(length=128), nullable=False),
        sa.Column("valid_s", sa.BigInteger(), nullable=False),
        sa.Column("nbf", sa.BigInteger(), nullable=True),
        sa.Column("exp", sa.BigInteger(), nullable=True),
        sa.Column("token", sa.LargeBinary(), nullable=True),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("issuer_kid", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("decided_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificates")),
        sa.UniqueConstraint("cert_no", name=op.f("uq_certificates_cert_no")),
    )
    op.create_table(
        "gateways",
        sa.Column("gw", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("registered_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("gw", name=op.f("pk_gateways")),
        sa.UniqueConstraint("public_key", name=op.f("uq_gateways_public_key")),
    )
    op.create_table(
        "issuer_keys",
        sa.Column("kid", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_issuer_keys")),
    )
    op.create_table(
        "gateway_heads",
        sa.Column("gw", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head", sa.LargeBinary(length=32), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["gw"], ["gateways.gw"], name=op.f("fk_gateway_heads_gw_gateways")),
        sa.PrimaryKeyConstraint("gw", name=op.f("pk_gateway_heads")),
    )
    op.create_table(
        "leases",
        sa.Column("lease_id", sa.String(length=10), nullable=False),
        sa.Column("cert_no", sa.String(length=12), nullable=False),
        sa.Column("gw", sa.String(length=16), nullable=False),
        sa.Column("slot_lo", sa.Integer(), nullable=False),
        sa.Column("slot_hi", sa.Integer(), nullable=False),
        sa.Column("exp", sa.BigInteger(), nullable=False),
        sa.Column("token", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["cert_no"], ["certificates.cert_no"], name=op.f("fk_leases_cert_no_certificates")),
        sa.ForeignKeyConstraint(["gw"], ["gateways.gw"], name=op.f("fk_leases_gw_gateways")),
        sa.PrimaryKeyConstraint("lease_id", name=op.f("pk_leases")),
    )
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_leases_cert_no"), ["cert_no"], unique=False)
        batch_op.create_index(batch_op.f("ix_leases_gw"), ["gw"], unique=False)

    op.create_table(
        "records",
        sa.Column("gw", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("lease_id", sa.String(length=16), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("sn", sa.String(length=28), nullable=False),
        sa.Column("old_pid", sa.String(length=16), nullable=False),
        sa.Column("new_pid", sa.String(length=16), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("counted", sa.Boolean(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["gw"], ["gateways.gw"], name=op.f("fk_records_gw_gateways")),
        sa.PrimaryKeyConstraint("gw", "seq", name=op.f("pk_records")),
    )
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.create_index("ix_records_lease_slot", ["lease_id", "slot"], unique=False)

    op.create_table(
        "confirmations",
        sa.Column("lease_id", sa.String(length=10), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("cert_no", sa.String(length=12), nullable=False),
        sa.Column("sn", sa.String(length=28), nullable=False),
        sa.Column("gw", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cert_no"], ["certificates.cert_no"], name=op.f("fk_confirmations_cert_no_certificates")
        ),
        sa.ForeignKeyConstraint(["lease_id"], ["leases.lease_id"], name=op.f("fk_confirmations_lease_id_leases")),
        sa.PrimaryKeyConstraint("lease_id", "slot", name=op.f("pk_confirmations")),
    )
    with op.batch_alter_table("confirmations", schema=None) as batch_op:
        batch_op.create_index("ix_confirmations_cert_sn", ["cert_no", "sn"], unique=False)

    op.create_table(
        "slot_holds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cert_no", sa.String(length=12), nullable=False),
        sa.Column("lease_id", sa.String(length=10), nullable=False),
        sa.Column("lo", sa.Integer(), nullable=False),
        sa.Column("hi", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["cert_no"], ["certificates.cert_no"], name=op.f("fk_slot_holds_cert_no_certificates")),
        sa.ForeignKeyConstraint(["lease_id"], ["leases.lease_id"], name=op.f("fk_slot_holds_lease_id_leases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slot_holds")),
    )
    with op.batch_alter_table("slot_holds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_slot_holds_cert_no"), ["cert_no"], unique=False)
        batch_op.create_index(batch_op.f("ix_slot_holds_lease_id"), ["lease_id"], unique=False)


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table("slot_holds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slot_holds_lease_id"))
        batch_op.drop_index(batch_op.f("ix_slot_holds_cert_no"))

    op.drop_table("slot_holds")
    with op.batch_alter_table("confirmations", schema=None) as batch_op:
        batch_op.drop_index("ix_confirmations_cert_sn")

    op.drop_table("confirmations")
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.drop_index("ix_records_lease_slot")

    op.drop_table("records")
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leases_gw"))
        batch_op.drop_index(batch_op.f("ix_leases_cert_no"))

    op.drop_table("leases")
    op.drop_table("gateway_heads")
    op.drop_table("issuer_keys")
    op.drop_table("gateways")
    op.drop_table("certificates")
    with op.batch_alter_table("anomalies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_anomalies_kind"))

    op.drop_table("anomalies")
