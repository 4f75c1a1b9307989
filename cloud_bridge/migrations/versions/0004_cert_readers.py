"""certificate readers: the owners of the original and the new product when the application was made

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 09:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# A product counts as the owner at application only if it existed then: products never change owner and are
# never deleted, so a product created later (a PID registered after the certificate targeted it) is no reader.
_OWNER_THEN = (
    "(SELECT p.org_id FROM products p WHERE p.pid = certificates.{pid} AND p.created_at <= certificates.created_at)"
)


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        for column in ("original_org_id", "new_org_id"):
            batch_op.add_column(sa.Column(column, sa.Integer(), nullable=True))
            batch_op.create_index(batch_op.f(f"ix_certificates_{column}"), [column], unique=False)
            batch_op.create_foreign_key(
                batch_op.f(f"fk_certificates_{column}_organisations"), "organisations", [column], ["id"]
            )
    # Built from this file's constants only.
    op.execute(
        "UPDATE certificates SET "  # noqa: S608
        f"original_org_id = {_OWNER_THEN.format(pid='original_pid')}, "
        f"new_org_id = {_OWNER_THEN.format(pid='new_pid')}"
    )


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        for column in ("new_org_id", "original_org_id"):
            batch_op.drop_constraint(batch_op.f(f"fk_certificates_{column}_organisations"), type_="foreignkey")
            batch_op.drop_index(batch_op.f(f"ix_certificates_{column}"))
            batch_op.drop_column(column)
