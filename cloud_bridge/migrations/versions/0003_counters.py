"""confirmation counters per certificate and gateway

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:49:56.463248
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "cert_counts",
        sa.Column("cert_no", sa.String(length=12), nullable=False),
        sa.Column("gw", sa.String(length=16), nullable=False),
        sa.Column("confirmed", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cert_no"], ["certificates.cert_no"], name=op.f("fk_cert_counts_cert_no_certificates")
        ),
        sa.ForeignKeyConstraint(["gw"], ["gateways.gw"], name=op.f("fk_cert_counts_gw_gateways")),
        sa.PrimaryKeyConstraint("cert_no", "gw", name=op.f("pk_cert_counts")),
    )
    op.execute(
        "INSERT INTO cert_counts (cert_no, gw, confirmed) "
        "SELECT cert_no, gw, count(*) FROM confirmations GROUP BY cert_no, gw"
    )


def downgrade() -> None:
    """Undo this revision."""
    op.drop_table("cert_counts")
