"""operations: dead letters, beat runs

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa
import sqlalchemy.dialects.postgresql  # noqa: F401

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_heartbeats",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_result", sa.dialects.postgresql.JSONB(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_heartbeats")),
    )


def downgrade() -> None:
    op.drop_table("job_heartbeats")
