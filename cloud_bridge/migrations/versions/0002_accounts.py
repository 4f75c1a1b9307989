"""organisations, accounts, products; owners of certificates and gateways; activations; lease releases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 12:12:43.632853
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "organisations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisations")),
        sa.UniqueConstraint("name", name=op.f("uq_organisations_name")),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("key_prefix", sa.String(length=12), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name=op.f("fk_accounts_org_id_organisations")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_accounts_key_hash")),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_accounts_org_id"), ["org_id"], unique=False)

    op.create_table(
        "products",
        sa.Column("pid", sa.String(length=16), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name=op.f("fk_products_org_id_organisations")),
        sa.PrimaryKeyConstraint("pid", name=op.f("pk_products")),
    )
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_products_org_id"), ["org_id"], unique=False)

    op.create_table(
        "activations",
        sa.Column("lease_id", sa.String(length=10), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("cert_no", sa.String(length=12), nullable=False),
        sa.Column("sn", sa.String(length=28), nullable=False),
        sa.Column("pid", sa.String(length=16), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cert_no"], ["certificates.cert_no"], name=op.f("fk_activations_cert_no_certificates")
        ),
        sa.ForeignKeyConstraint(["lease_id"], ["leases.lease_id"], name=op.f("fk_activations_lease_id_leases")),
        sa.PrimaryKeyConstraint("lease_id", "slot", name=op.f("pk_activations")),
        sa.UniqueConstraint("cert_no", "sn", name="uq_activations_cert_sn"),
    )
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("org_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_certificates_org_id"), ["org_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_certificates_org_id_organisations"), "organisations", ["org_id"], ["id"]
        )

    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.add_column(sa.Column("org_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_gateways_org_id"), ["org_id"], unique=False)
        batch_op.create_foreign_key(batch_op.f("fk_gateways_org_id_organisations"), "organisations", ["org_id"], ["id"])

    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("release_seq", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_column("release_seq")

    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_gateways_org_id_organisations"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_gateways_org_id"))
        batch_op.drop_column("org_id")

    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_certificates_org_id_organisations"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_certificates_org_id"))
        batch_op.drop_column("org_id")

    op.drop_table("activations")
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_products_org_id"))

    op.drop_table("products")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_org_id"))

    op.drop_table("accounts")
    op.drop_table("organisations")
