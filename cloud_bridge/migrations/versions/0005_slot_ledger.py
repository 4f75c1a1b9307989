"""one invariant per (certificate, slot): leases end by close or write-off, forks freeze, signed requests

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:50:00.000000

Confirmations and activations become unique per (certificate, slot). A database written by the earlier ledger
may hold a slot confirmed (or activated) under two leases, the over-count this revision exists to stop: the
later rows are removed, each with an anomaly that names it, and the counters are rebuilt.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_LATER = (
    "EXISTS (SELECT 1 FROM {table} e WHERE e.cert_no = {table}.cert_no AND e.slot = {table}.slot "
    "AND (e.{order} < {table}.{order} OR (e.{order} = {table}.{order} AND e.lease_id < {table}.lease_id)))"
)


def _dedupe(table: str, order: str) -> None:
    later = _LATER.format(table=table, order=order)
    op.execute(
        "INSERT INTO anomalies (kind, gw, cert_no, lease_id, slot, sn, message, at) "  # noqa: S608 - constants only
        f"SELECT 'duplicate_slot', NULL, cert_no, lease_id, slot, sn, "
        f"'removed by migration 0005: slot confirmed or activated under another lease first ({table})', 0 "
        f"FROM {table} WHERE {later}"
    )
    op.execute(f"DELETE FROM {table} WHERE {later}")  # noqa: S608 - constants only


def upgrade() -> None:
    """Apply this revision."""
    _dedupe("confirmations", "seq")
    _dedupe("activations", "at")
    op.execute("DELETE FROM cert_counts")
    op.execute(
        "INSERT INTO cert_counts (cert_no, gw, confirmed) "
        "SELECT cert_no, gw, count(*) FROM confirmations GROUP BY cert_no, gw"
    )
    with op.batch_alter_table("confirmations", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_confirmations_cert_slot", ["cert_no", "slot"])
    with op.batch_alter_table("activations", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_activations_cert_slot", ["cert_no", "slot"])
    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.add_column(sa.Column("frozen_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("frozen_seq", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("gateway_heads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ack_due", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.alter_column("release_seq", new_column_name="closed_seq", existing_type=sa.BigInteger())
        batch_op.add_column(sa.Column("returned", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("ended_by", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("end_reason", sa.Text(), nullable=True))
    # Released and expired leases had already given their unused slots back.
    op.execute("UPDATE leases SET state = 'closed' WHERE state IN ('released', 'expired')")
    op.create_table(
        "gateway_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("gw", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("lease_id", sa.String(length=10), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["gw"], ["gateways.gw"], name=op.f("fk_gateway_events_gw_gateways")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_events")),
    )
    op.create_index(op.f("ix_gateway_events_gw"), "gateway_events", ["gw"], unique=False)
    op.create_table(
        "request_nonces",
        sa.Column("gw", sa.String(length=16), nullable=False),
        sa.Column("nonce", sa.LargeBinary(length=16), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["gw"], ["gateways.gw"], name=op.f("fk_request_nonces_gw_gateways")),
        sa.PrimaryKeyConstraint("gw", "nonce", name=op.f("pk_request_nonces")),
    )
    op.create_index(op.f("ix_request_nonces_at"), "request_nonces", ["at"], unique=False)
    op.create_table(
        "forked_records",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("gw", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("lease_id", sa.String(length=16), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("sn", sa.String(length=28), nullable=False),
        sa.Column("counted", sa.Boolean(), nullable=False),
        sa.Column("forked_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["gw"], ["gateways.gw"], name=op.f("fk_forked_records_gw_gateways")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forked_records")),
    )
    op.create_index(op.f("ix_forked_records_gw"), "forked_records", ["gw"], unique=False)
    op.create_index(op.f("ix_forked_records_lease_id"), "forked_records", ["lease_id"], unique=False)


def downgrade() -> None:
    """Undo this revision (the removed duplicate rows stay removed; their anomalies tell which they were)."""
    op.drop_table("forked_records")
    op.drop_table("request_nonces")
    op.drop_table("gateway_events")
    op.execute("UPDATE leases SET state = 'released' WHERE state IN ('closed', 'written_off')")
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_column("end_reason")
        batch_op.drop_column("ended_by")
        batch_op.drop_column("returned")
        batch_op.alter_column("closed_seq", new_column_name="release_seq", existing_type=sa.BigInteger())
    with op.batch_alter_table("gateway_heads", schema=None) as batch_op:
        batch_op.drop_column("ack_due")
    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.drop_column("frozen_seq")
        batch_op.drop_column("frozen_at")
    with op.batch_alter_table("activations", schema=None) as batch_op:
        batch_op.drop_constraint("uq_activations_cert_slot", type_="unique")
    with op.batch_alter_table("confirmations", schema=None) as batch_op:
        batch_op.drop_constraint("uq_confirmations_cert_slot", type_="unique")
