"""notifications: dedupe keys, rate limits, mention state

Mention state needs no table of its own: a mention notification carries the
dedupe key "mention:post:<id>" / "mention:comment:<id>" per recipient, so an
edit re-run notifies only users who have no such row yet.

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("notifications", sa.Column("dedupe_key", sa.String(length=255), nullable=True))
    op.create_index("uq_notifications_user_dedupe", "notifications", ["user_id", "dedupe_key"], unique=True,
                    postgresql_where=sa.text("dedupe_key IS NOT NULL"))
    op.create_table(
        "notification_rate_limits",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), server_default="0", nullable=False),
        sa.CheckConstraint("count >= 0", name=op.f("ck_notification_rate_limits_count_non_negative")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_notification_rate_limits_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "type", "window_start", name=op.f("pk_notification_rate_limits")),
    )
    op.create_index("idx_notification_rate_limits_window_start", "notification_rate_limits", ["window_start"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("idx_notification_rate_limits_window_start", table_name="notification_rate_limits")
    op.drop_table("notification_rate_limits")
    op.drop_index("uq_notifications_user_dedupe", table_name="notifications",
                  postgresql_where=sa.text("dedupe_key IS NOT NULL"))
    op.drop_column("notifications", "dedupe_key")
