"""gateway key history: every key a gateway has had, with the journal seqs it may sign (key rotation)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 07:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "gateway_keys",
        sa.Column("kid", sa.String(length=16), nullable=False),
        sa.Column("gw", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("from_seq", sa.BigInteger(), nullable=False),
        sa.Column("to_seq", sa.BigInteger(), nullable=True),
        sa.Column("introduced_at", sa.BigInteger(), nullable=False),
        sa.Column("retired_at", sa.BigInteger(), nullable=True),
        sa.Column("introduction", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["gw"], ["gateways.gw"], name=op.f("fk_gateway_keys_gw_gateways")),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_gateway_keys")),
        sa.UniqueConstraint("public_key", name=op.f("uq_gateway_keys_public_key")),
    )
    with op.batch_alter_table("gateway_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gateway_keys_gw"), ["gw"], unique=False)
    # Before this revision a gateway's id was the kid of its only key: that key signs from the start.
    op.execute(
        "INSERT INTO gateway_keys (kid, gw, public_key, from_seq, introduced_at) "
        "SELECT gw, gw, public_key, 0, registered_at FROM gateways"
    )
    # gateway_keys.public_key is the unique one now. A unique gateways.public_key would make PostgreSQL take a key
    # lock to change it at a rotation, which deadlocks with requests that hold a key-share lock on the gateway's
    # row (their nonce rows reference it) while they wait for its head lock.
    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_gateways_public_key"), type_="unique")


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f("uq_gateways_public_key"), ["public_key"])
    op.drop_table("gateway_keys")
