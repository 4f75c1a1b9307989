"""products as configured things: model number, protocol, firmware, data points, panel, module, services, data
owner, the OEM management relation; every PID ever issued; OEM links

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-02 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

# Products made before this revision were registered by PID alone: their model number becomes the PID (unique
# per owner, since PIDs are unique), their protocol follows the PID's length (8 characters: BLE, which the owner
# may change to Zigbee in development; 16: Wi-Fi), their firmware is the platform's own and their data is theirs.
_FILL = (
    "UPDATE products SET model_no = pid, "
    "protocol = CASE WHEN length(pid) = 8 THEN 'ble' ELSE 'wifi' END, "
    "firmware = 'oem', firmware_version = '', data_points = '[]', panel = '', module = '', services = '', "
    "data_owner = org_id"
)
_FILLED = ("model_no", "protocol", "firmware", "firmware_version", "data_points", "panel", "module", "services")


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_no", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("protocol", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("firmware", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("firmware_version", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("data_points", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("panel", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("module", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("services", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("data_owner", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("managed_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("source_pid", sa.String(length=16), nullable=True))
    op.execute(_FILL)
    with op.batch_alter_table("products", schema=None) as batch_op:
        for column in _FILLED:
            batch_op.alter_column(column, existing_type=_type_of(column), nullable=False)
        batch_op.alter_column("data_owner", existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_products_data_owner_organisations"), "organisations", ["data_owner"], ["id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_products_managed_by_organisations"), "organisations", ["managed_by"], ["id"]
        )
        batch_op.create_index(batch_op.f("ix_products_managed_by"), ["managed_by"], unique=False)
        batch_op.create_unique_constraint("uq_products_org_model", ["org_id", "model_no"])
    op.create_table(
        "issued_pids",
        sa.Column("pid", sa.String(length=16), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name=op.f("fk_issued_pids_org_id_organisations")),
        sa.PrimaryKeyConstraint("pid", name=op.f("pk_issued_pids")),
    )
    op.execute("INSERT INTO issued_pids (pid, org_id, issued_at) SELECT pid, org_id, created_at FROM products")
    op.create_table(
        "oem_links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("pid", sa.String(length=16), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.BigInteger(), nullable=True),
        sa.Column("used_by", sa.Integer(), nullable=True),
        sa.Column("new_pid", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["pid"], ["products.pid"], name=op.f("fk_oem_links_pid_products")),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name=op.f("fk_oem_links_org_id_organisations")),
        sa.ForeignKeyConstraint(["created_by"], ["accounts.id"], name=op.f("fk_oem_links_created_by_accounts")),
        sa.ForeignKeyConstraint(["used_by"], ["accounts.id"], name=op.f("fk_oem_links_used_by_accounts")),
        sa.ForeignKeyConstraint(["new_pid"], ["products.pid"], name=op.f("fk_oem_links_new_pid_products")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oem_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_oem_links_token_hash")),
    )
    with op.batch_alter_table("oem_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oem_links_pid"), ["pid"], unique=False)
        batch_op.create_index(batch_op.f("ix_oem_links_org_id"), ["org_id"], unique=False)


def _type_of(column: str) -> sa.types.TypeEngine[str]:
    lengths = {"model_no": 64, "protocol": 8, "firmware": 8, "firmware_version": 32, "panel": 128, "module": 64}
    return sa.String(length=lengths[column]) if column in lengths else sa.Text()


def downgrade() -> None:
    """Undo this revision."""
    op.drop_table("oem_links")
    op.drop_table("issued_pids")
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_constraint("uq_products_org_model", type_="unique")
        batch_op.drop_index(batch_op.f("ix_products_managed_by"))
        batch_op.drop_constraint(batch_op.f("fk_products_managed_by_organisations"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_products_data_owner_organisations"), type_="foreignkey")
        for column in (*_FILLED, "data_owner", "managed_by", "source_pid"):
            batch_op.drop_column(column)
