"""images: media_files table (seed 003)

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PROCESSING_STATUS = sa.Enum("PENDING", "PROCESSING", "COMPLETED", "FAILED", name="processing_status_enum")


def upgrade() -> None:
    op.create_table(
        "media_files",
        sa.Column("id", sa.Uuid(as_uuid=False), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("post_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("dedupe_key", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("original_name", sa.String(length=255), nullable=True),
        sa.Column("mime_type", sa.String(length=100), nullable=True),
        sa.Column("file_size", sa.BigInteger(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("duration", sa.Integer(), nullable=True),
        sa.Column("storage_path", sa.String(length=500), nullable=False),
        sa.Column("cdn_url", sa.String(length=500), nullable=True),
        sa.Column("processing_status", PROCESSING_STATUS, server_default="PENDING", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("purpose IN ('profile_photo', 'post_photo')", name=op.f("ck_media_files_purpose_valid")),
        sa.CheckConstraint("(purpose = 'post_photo') = (post_id IS NOT NULL)",
                           name=op.f("ck_media_files_post_id_matches_purpose")),
        sa.ForeignKeyConstraint(["post_id"], ["posts.id"], name=op.f("fk_media_files_post_id_posts"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_media_files_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_media_files")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_media_files_dedupe_key")),
    )
    op.create_index("idx_media_user_id", "media_files", ["user_id"], unique=False)
    op.create_index("idx_media_status", "media_files", ["processing_status"], unique=False)
    op.create_index("idx_media_created_at", "media_files", [sa.literal_column("created_at DESC")], unique=False)
    op.create_index("idx_media_post_id", "media_files", ["post_id"], unique=False)
    op.create_index("idx_media_filename", "media_files", ["filename"], unique=False)


def downgrade() -> None:
    op.drop_index("idx_media_filename", table_name="media_files")
    op.drop_index("idx_media_post_id", table_name="media_files")
    op.drop_index("idx_media_created_at", table_name="media_files")
    op.drop_index("idx_media_status", table_name="media_files")
    op.drop_index("idx_media_user_id", table_name="media_files")
    op.drop_table("media_files")
    PROCESSING_STATUS.drop(op.get_bind(), checkfirst=True)
