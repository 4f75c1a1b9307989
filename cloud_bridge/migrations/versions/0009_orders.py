"""the purchase module: enterprise certification, buyer and R&D grants, orders and their history

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""

    op.create_table(
        "enterprise_certifications",
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("certified_by", sa.String(length=128), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("certified_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_enterprise_certifications_org_id_organisations")
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_enterprise_certifications")),
    )
    op.create_table(
        "order_grants",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("pid", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("granted_by", sa.String(length=128), nullable=False),
        sa.Column("granted_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_order_grants_account_id_accounts")),
        sa.ForeignKeyConstraint(["pid"], ["products.pid"], name=op.f("fk_order_grants_pid_products")),
        sa.PrimaryKeyConstraint("account_id", "pid", "kind", name=op.f("pk_order_grants")),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("order_no", sa.String(length=12), nullable=True),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("pid", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(length=128), nullable=False),
        sa.Column("snapshot", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(length=32), nullable=False),
        sa.Column("po_no", sa.String(length=64), nullable=False),
        sa.Column("batch_no", sa.String(length=64), nullable=False),
        sa.Column("model_no", sa.String(length=64), nullable=False),
        sa.Column("material_no", sa.String(length=64), nullable=False),
        sa.Column("delivery_address", sa.Text(), nullable=False),
        sa.Column("invoice_title", sa.String(length=128), nullable=False),
        sa.Column("invoice_tax_no", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("price_cents", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("software_version", sa.String(length=64), nullable=True),
        sa.Column("contract_no", sa.String(length=64), nullable=True),
        sa.Column("pay_method", sa.String(length=8), nullable=True),
        sa.Column("paid_cents", sa.BigInteger(), nullable=False),
        sa.Column("ship_batches", sa.Text(), nullable=True),
        sa.Column("carrier", sa.String(length=64), nullable=True),
        sa.Column("tracking_no", sa.String(length=64), nullable=True),
        sa.Column("invoice_no", sa.String(length=64), nullable=True),
        sa.Column("cert_no", sa.String(length=12), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["cert_no"], ["certificates.cert_no"], name=op.f("fk_orders_cert_no_certificates")),
        sa.ForeignKeyConstraint(["created_by"], ["accounts.id"], name=op.f("fk_orders_created_by_accounts")),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name=op.f("fk_orders_org_id_organisations")),
        sa.ForeignKeyConstraint(["pid"], ["products.pid"], name=op.f("fk_orders_pid_products")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("cert_no", name=op.f("uq_orders_cert_no")),
        sa.UniqueConstraint("order_no", name=op.f("uq_orders_order_no")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_org_fingerprint", ["org_id", "fingerprint"], unique=False)
        batch_op.create_index(batch_op.f("ix_orders_org_id"), ["org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_orders_pid"), ["pid"], unique=False)

    op.create_table(
        "order_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=False),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_order_events_order_id_orders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_events")),
    )
    with op.batch_alter_table("order_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_order_events_order_id"), ["order_id"], unique=False)


def downgrade() -> None:
    """Undo this revision."""

    with op.batch_alter_table("order_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_order_events_order_id"))

    op.drop_table("order_events")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_pid"))
        batch_op.drop_index(batch_op.f("ix_orders_org_id"))
        batch_op.drop_index("ix_orders_org_fingerprint")

    op.drop_table("orders")
    op.drop_table("order_grants")
    op.drop_table("enterprise_certifications")
