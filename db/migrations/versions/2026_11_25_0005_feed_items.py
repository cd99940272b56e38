"""feed: feed_items, engagement_score, popular_posts

Revision ID: 0005
Revises: 0004

feed_items keeps seed 003's unique (user_id, post_id). A feed is replaced by
deleting the user's rows and inserting the new ones in ONE transaction
(tasks/feed/scoring.py); under READ COMMITTED a reader's statement sees the
old or the new committed feed, never a mix, so no generation column is needed.

popular_posts has no time filter of its own: a view cannot take "now" as a
parameter and scoring must not depend on the database clock. feed.update_trending
keeps posts.engagement_score > 0 only for posts inside the trending window, and
the view keeps the top 1000 of those. Its UNIQUE index on id is what
REFRESH MATERIALIZED VIEW CONCURRENTLY requires.
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("posts", sa.Column("engagement_score", sa.Double(), server_default="0", nullable=False))
    op.create_index("idx_posts_engagement_score", "posts", [sa.literal_column("engagement_score DESC")],
                    unique=False, postgresql_where=sa.text("engagement_score > 0"))
    op.create_table(
        "feed_items",
        sa.Column("id", sa.Uuid(as_uuid=False), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("post_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("reason IN ('followed', 'mutual', 'trending', 'recent')",
                           name=op.f("ck_feed_items_reason_valid")),
        sa.ForeignKeyConstraint(["post_id"], ["posts.id"], name=op.f("fk_feed_items_post_id_posts"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_feed_items_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_items")),
        sa.UniqueConstraint("user_id", "post_id", name=op.f("uq_feed_items_user_id_post_id")),
    )
    op.create_index("idx_feed_user_score", "feed_items", ["user_id", sa.literal_column("score DESC")], unique=False)
    op.create_index("idx_feed_created_at", "feed_items", [sa.literal_column("created_at DESC")], unique=False)
    op.create_index("idx_feed_expires_at", "feed_items", ["expires_at"], unique=False)
    # Post deletes cascade here; without this index each one scans feed_items.
    op.create_index(op.f("ix_feed_items_post_id"), "feed_items", ["post_id"], unique=False)
    op.execute("""
        CREATE MATERIALIZED VIEW popular_posts AS
        SELECT p.id, p.author_id, u.username, p.post_type, p.created_at,
               p.hearts_count, p.reactions_count, p.shares_count, p.engagement_score
        FROM posts p JOIN users u ON u.id = p.author_id
        WHERE p.is_public AND p.engagement_score > 0
        ORDER BY p.engagement_score DESC
        LIMIT 1000
        WITH DATA
    """)
    op.execute("CREATE UNIQUE INDEX idx_popular_posts_id ON popular_posts (id)")
    op.execute("CREATE INDEX idx_popular_posts_score ON popular_posts (engagement_score DESC)")


def downgrade() -> None:
    op.execute("DROP MATERIALIZED VIEW IF EXISTS popular_posts")
    op.drop_index(op.f("ix_feed_items_post_id"), table_name="feed_items")
    op.drop_index("idx_feed_expires_at", table_name="feed_items")
    op.drop_index("idx_feed_created_at", table_name="feed_items")
    op.drop_index("idx_feed_user_score", table_name="feed_items")
    op.drop_table("feed_items")
    op.drop_index("idx_posts_engagement_score", table_name="posts",
                  postgresql_where=sa.text("engagement_score > 0"))
    op.drop_column("posts", "engagement_score")
