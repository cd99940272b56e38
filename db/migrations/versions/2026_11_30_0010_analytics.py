"""analytics: view counters, daily rollups, follow events, tags, trending tags, system metrics

Revision ID: 0010
Revises: 0009

An unfollow deletes its ``follows`` row (or moves it out of 'active'), so
nothing would be left to count ``followers_lost`` from: a row trigger records
every gain and loss in ``follow_events``, in the writer's own transaction, for
every writer (the web tier, a purge's cascade, a backfill).

The counter-dirty UPDATE triggers are re-installed: their join of the
transition tables is now planned at every firing (``EXECUTE``), where PL/pgSQL
had kept the plan of a connection's first UPDATE, a nested loop made for no
rows that a later 20,000-row update ran in quadratic time. Downgrading keeps
the new bodies (they mark exactly the same rows).

``posts.views_count`` and ``posts.tags`` are added with constant defaults,
which PostgreSQL 11+ does without rewriting the table.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from tasks.engagement.counters import GRATEFUL_SOURCES, counters_on, trigger_ddl

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

FOLLOW_TRIGGER_DDL = (
    """
    CREATE FUNCTION record_follow_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        IF NEW.status = 'active' THEN
          INSERT INTO follow_events (follower_id, followed_id, gained) VALUES (NEW.follower_id, NEW.followed_id, true);
        END IF;
      ELSIF TG_OP = 'DELETE' THEN
        IF OLD.status = 'active' THEN
          INSERT INTO follow_events (follower_id, followed_id, gained) VALUES (OLD.follower_id, OLD.followed_id, false);
        END IF;
      ELSIF (OLD.status = 'active') <> (NEW.status = 'active') THEN
        INSERT INTO follow_events (follower_id, followed_id, gained)
        VALUES (NEW.follower_id, NEW.followed_id, NEW.status = 'active');
      END IF;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER follows_analytics_events AFTER INSERT OR DELETE OR UPDATE OF status ON follows
    FOR EACH ROW EXECUTE FUNCTION record_follow_event()
    """,
)
DROP_FOLLOW_TRIGGER_DDL = (
    "DROP TRIGGER IF EXISTS follows_analytics_events ON follows",
    "DROP FUNCTION IF EXISTS record_follow_event()",
)


def upgrade() -> None:
    op.create_table('analytics_days',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('rolled_up_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finalised_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('users', sa.Integer(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('day', name=op.f('pk_analytics_days'))
    )
    op.create_table('analytics_flushes',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('applied_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('counters', sa.Integer(), server_default='0', nullable=False),
    sa.Column('increments', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('rejected', sa.Integer(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_analytics_flushes'))
    )
    op.create_index('idx_analytics_flushes_applied_at', 'analytics_flushes', ['applied_at'], unique=False)
    op.create_table('follow_events',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('follower_id', sa.Integer(), nullable=False),
    sa.Column('followed_id', sa.Integer(), nullable=False),
    sa.Column('gained', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_follow_events'))
    )
    op.create_index('idx_follow_events_created_at', 'follow_events', ['created_at'], unique=False)
    op.create_table('system_metrics',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('metric_name', sa.String(length=100), nullable=False),
    sa.Column('metric_value', sa.Numeric(precision=15, scale=4), nullable=False),
    sa.Column('tags', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('sampled_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('resolution', sa.String(length=6), server_default='minute', nullable=False),
    sa.CheckConstraint("resolution IN ('minute', 'hour')", name=op.f('ck_system_metrics_resolution_valid')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_system_metrics'))
    )
    op.create_index('idx_metrics_name_time', 'system_metrics', ['metric_name', sa.literal_column('sampled_at DESC')], unique=False)
    op.create_index('idx_metrics_resolution_time', 'system_metrics', ['resolution', 'sampled_at'], unique=False)
    op.create_index('idx_metrics_tags', 'system_metrics', ['tags'], unique=False, postgresql_using='gin')
    op.create_index('uq_system_metrics_sample', 'system_metrics', ['metric_name', 'resolution', 'sampled_at', 'tags'], unique=True)
    op.create_table('tags',
    sa.Column('id', sa.Integer(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tags')),
    sa.UniqueConstraint('name', name=op.f('uq_tags_name'))
    )
    op.create_table('analytics_events',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('event_type', sa.String(length=50), nullable=False),
    sa.Column('event_data', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_analytics_events_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', 'created_at', name=op.f('pk_analytics_events')),
    postgresql_partition_by='RANGE (created_at)'
    )
    op.create_index('idx_analytics_events_type', 'analytics_events', ['event_type'], unique=False)
    op.create_index('idx_analytics_events_user_id', 'analytics_events', ['user_id'], unique=False)
    op.create_table('profile_daily_views',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('views', sa.Integer(), server_default='0', nullable=False),
    sa.Column('unique_viewers', sa.Integer(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_profile_daily_views_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'day', name=op.f('pk_profile_daily_views'))
    )
    op.create_index('idx_profile_daily_views_day', 'profile_daily_views', ['day'], unique=False)
    op.create_table('trending_tags',
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('score', sa.Double(), nullable=False),
    sa.Column('users_24h', sa.Integer(), nullable=False),
    sa.Column('expected_24h', sa.Double(), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tag_id'], ['tags.id'], name=op.f('fk_trending_tags_tag_id_tags'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('rank', name=op.f('pk_trending_tags')),
    sa.UniqueConstraint('tag_id', name=op.f('uq_trending_tags_tag_id'))
    )
    op.create_table('user_analytics',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('date', sa.Date(), nullable=False),
    sa.Column('profile_views', sa.Integer(), server_default='0', nullable=False),
    sa.Column('post_impressions', sa.Integer(), server_default='0', nullable=False),
    sa.Column('post_engagements', sa.Integer(), server_default='0', nullable=False),
    sa.Column('followers_gained', sa.Integer(), server_default='0', nullable=False),
    sa.Column('followers_lost', sa.Integer(), server_default='0', nullable=False),
    sa.Column('total_likes', sa.Integer(), server_default='0', nullable=False),
    sa.Column('total_comments', sa.Integer(), server_default='0', nullable=False),
    sa.Column('total_shares', sa.Integer(), server_default='0', nullable=False),
    sa.Column('post_views', sa.Integer(), server_default='0', nullable=False),
    sa.Column('is_final', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_analytics_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_analytics'))
    )
    op.create_index('idx_analytics_date', 'user_analytics', ['date'], unique=False)
    op.create_index('idx_analytics_user_date', 'user_analytics', ['user_id', sa.literal_column('date DESC')], unique=False)
    op.create_index('uq_user_analytics_user_date', 'user_analytics', ['user_id', 'date'], unique=True)
    op.create_table('user_share_platforms',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('date', sa.Date(), nullable=False),
    sa.Column('platform', sa.String(length=30), nullable=False),
    sa.Column('shares', sa.Integer(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_share_platforms_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'date', 'platform', name=op.f('pk_user_share_platforms'))
    )
    op.create_index('idx_user_share_platforms_date', 'user_share_platforms', ['date'], unique=False)
    op.create_table('post_daily_views',
    sa.Column('post_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=False),
    sa.Column('views', sa.Integer(), server_default='0', nullable=False),
    sa.Column('unique_viewers', sa.Integer(), server_default='0', nullable=False),
    sa.Column('impressions', sa.Integer(), server_default='0', nullable=False),
    sa.Column('impression_reach', sa.Integer(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_post_daily_views_post_id_posts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('post_id', 'day', name=op.f('pk_post_daily_views'))
    )
    op.create_index('idx_post_daily_views_day_author', 'post_daily_views', ['day', 'author_id'], unique=False)
    op.create_table('post_tags',
    sa.Column('post_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_post_tags_post_id_posts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tag_id'], ['tags.id'], name=op.f('fk_post_tags_tag_id_tags'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('post_id', 'tag_id', name=op.f('pk_post_tags'))
    )
    op.create_index('idx_post_tags_tag_id', 'post_tags', ['tag_id'], unique=False)
    op.create_index('idx_comments_created_at_brin', 'comments', ['created_at'], unique=False, postgresql_using='brin')
    op.create_index('idx_emoji_reactions_created_at_brin', 'emoji_reactions', ['created_at'], unique=False, postgresql_using='brin')
    op.create_index('idx_likes_created_at_brin', 'likes', ['created_at'], unique=False, postgresql_using='brin')
    op.add_column('posts', sa.Column('views_count', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('posts', sa.Column('tags', postgresql.ARRAY(sa.String(length=100)), server_default=sa.text("'{}'"), nullable=False))
    op.create_index('idx_posts_tags', 'posts', ['tags'], unique=False, postgresql_using='gin')
    op.create_index('idx_shares_created_at_brin', 'shares', ['created_at'], unique=False, postgresql_using='brin')
    op.create_check_constraint(op.f('ck_posts_views_count_nonnegative'), 'posts', 'views_count >= 0')
    # Pages written from now on keep 10 % free for HOT updates (views_count, engagement_score);
    # existing pages follow as they are rewritten (a VACUUM FULL or pg_repack does it at once).
    op.execute("ALTER TABLE posts SET (fillfactor = 90)")
    for statement in FOLLOW_TRIGGER_DDL:
        op.execute(statement)
    for statement in trigger_ddl(counters_on(GRATEFUL_SOURCES)):
        op.execute(statement)


def downgrade() -> None:
    for statement in DROP_FOLLOW_TRIGGER_DDL:
        op.execute(statement)
    op.execute("ALTER TABLE posts RESET (fillfactor)")
    op.drop_constraint(op.f('ck_posts_views_count_nonnegative'), 'posts', type_='check')
    op.drop_index('idx_shares_created_at_brin', table_name='shares', postgresql_using='brin')
    op.drop_index('idx_posts_tags', table_name='posts', postgresql_using='gin')
    op.drop_column('posts', 'tags')
    op.drop_column('posts', 'views_count')
    op.drop_index('idx_likes_created_at_brin', table_name='likes', postgresql_using='brin')
    op.drop_index('idx_emoji_reactions_created_at_brin', table_name='emoji_reactions', postgresql_using='brin')
    op.drop_index('idx_comments_created_at_brin', table_name='comments', postgresql_using='brin')
    op.drop_index('idx_post_tags_tag_id', table_name='post_tags')
    op.drop_table('post_tags')
    op.drop_index('idx_post_daily_views_day_author', table_name='post_daily_views')
    op.drop_table('post_daily_views')
    op.drop_index('idx_user_share_platforms_date', table_name='user_share_platforms')
    op.drop_table('user_share_platforms')
    op.drop_index('uq_user_analytics_user_date', table_name='user_analytics')
    op.drop_index('idx_analytics_user_date', table_name='user_analytics')
    op.drop_index('idx_analytics_date', table_name='user_analytics')
    op.drop_table('user_analytics')
    op.drop_table('trending_tags')
    op.drop_index('idx_profile_daily_views_day', table_name='profile_daily_views')
    op.drop_table('profile_daily_views')
    op.drop_index('idx_analytics_events_user_id', table_name='analytics_events')
    op.drop_index('idx_analytics_events_type', table_name='analytics_events')
    op.drop_table('analytics_events')
    op.drop_table('tags')
    op.drop_index('uq_system_metrics_sample', table_name='system_metrics')
    op.drop_index('idx_metrics_tags', table_name='system_metrics', postgresql_using='gin')
    op.drop_index('idx_metrics_resolution_time', table_name='system_metrics')
    op.drop_index('idx_metrics_name_time', table_name='system_metrics')
    op.drop_table('system_metrics')
    op.drop_index('idx_follow_events_created_at', table_name='follow_events')
    op.drop_table('follow_events')
    op.drop_index('idx_analytics_flushes_applied_at', table_name='analytics_flushes')
    op.drop_table('analytics_flushes')
    op.drop_table('analytics_days')
