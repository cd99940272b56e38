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
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("task_id", sa.String(200), nullable=False),
        sa.Column("task_name", sa.String(200), nullable=False),
        sa.Column("queue", sa.String(100), nullable=True),
        sa.Column("args", sa.dialects.postgresql.JSONB(), nullable=True),
        sa.Column("kwargs", sa.dialects.postgresql.JSONB(), nullable=True),
        sa.Column("raw_preview", sa.Text(), nullable=True),
        sa.Column("exception_type", sa.String(200), nullable=False),
        sa.Column("exception_message", sa.Text(), server_default="", nullable=False),
        sa.Column("error_code", sa.String(100), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="1", nullable=False),
        sa.Column("status", sa.String(20), server_default="dead", nullable=False),
        sa.Column("retried_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("retried_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        sa.UniqueConstraint("task_id", name=op.f("uq_dead_letters_task_id")),
    )
    op.create_index(op.f("ix_dead_letters_last_seen"), "dead_letters", ["last_seen"])


def downgrade() -> None:
    op.drop_index(op.f("ix_dead_letters_last_seen"), table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_table("job_heartbeats")
