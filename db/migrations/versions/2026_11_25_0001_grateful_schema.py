"""The Grateful schema of seeds 000 and 001, with emoji_reactions and shares.

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 23:39:42.337245
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sa.Integer(), sa.Identity(always=False), nullable=False),
    sa.Column('email', sa.String(), nullable=False),
    sa.Column('username', sa.String(), nullable=False),
    sa.Column('hashed_password', sa.String(), nullable=False),
    sa.Column('bio', sa.Text(), nullable=True),
    sa.Column('profile_image_url', sa.String(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('display_name', sa.String(length=100), nullable=True),
    sa.Column('city', sa.String(length=100), nullable=True),
    sa.Column('institutions', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('websites', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('location', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('profile_photo_filename', sa.String(length=255), nullable=True),
    sa.Column('profile_preferences', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.CheckConstraint("institutions IS NULL OR (jsonb_typeof(institutions) = 'array' AND jsonb_array_length(institutions) <= 10)", name=op.f('ck_users_institutions_max_10')),
    sa.CheckConstraint("websites IS NULL OR (jsonb_typeof(websites) = 'array' AND jsonb_array_length(websites) <= 5)", name=op.f('ck_users_websites_max_5')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users'))
    )
    op.create_index('idx_users_city', 'users', ['city'], unique=False)
    op.create_index('idx_users_display_name', 'users', ['display_name'], unique=False)
    op.create_index('idx_users_profile_photo_filename', 'users', ['profile_photo_filename'], unique=False)
    op.create_index('idx_users_username_lower', 'users', [sa.literal_column('lower(username)')], unique=False)
    op.create_index(op.f('ix_users_email'), 'users', ['email'], unique=True)
    op.create_index(op.f('ix_users_id'), 'users', ['id'], unique=False)
    op.create_index(op.f('ix_users_username'), 'users', ['username'], unique=True)
    op.create_table('follows',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('follower_id', sa.Integer(), nullable=False),
    sa.Column('followed_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), server_default='active', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('active', 'pending', 'blocked')", name=op.f('ck_follows_status_valid')),
    sa.CheckConstraint('follower_id != followed_id', name=op.f('ck_follows_no_self_follow')),
    sa.ForeignKeyConstraint(['followed_id'], ['users.id'], name=op.f('fk_follows_followed_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['follower_id'], ['users.id'], name=op.f('fk_follows_follower_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_follows')),
    sa.UniqueConstraint('follower_id', 'followed_id', name=op.f('uq_follows_follower_id_followed_id'))
    )
    op.create_index('idx_follows_created_at', 'follows', ['created_at'], unique=False)
    op.create_index('idx_follows_followed_id', 'follows', ['followed_id'], unique=False)
    op.create_index('idx_follows_follower_followed', 'follows', ['follower_id', 'followed_id'], unique=False)
    op.create_index('idx_follows_follower_id', 'follows', ['follower_id'], unique=False)
    op.create_index('idx_follows_status', 'follows', ['status'], unique=False)
    op.create_table('notifications',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=50), nullable=False),
    sa.Column('priority', sa.String(length=10), server_default='normal', nullable=False),
    sa.Column('title', sa.String(length=255), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('channel', sa.String(length=10), server_default='in_app', nullable=False),
    sa.Column('read', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('parent_id', sa.Uuid(as_uuid=False), nullable=True),
    sa.Column('is_batch', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('batch_count', sa.Integer(), server_default='1', nullable=False),
    sa.Column('batch_key', sa.String(length=255), nullable=True),
    sa.Column('last_updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("channel IN ('in_app', 'email', 'push')", name=op.f('ck_notifications_channel_valid')),
    sa.CheckConstraint("priority IN ('low', 'normal', 'high')", name=op.f('ck_notifications_priority_valid')),
    sa.CheckConstraint('(is_batch = TRUE AND parent_id IS NULL AND batch_count >= 1) OR (is_batch = FALSE)', name=op.f('ck_notifications_chk_batch_structure')),
    sa.CheckConstraint('(parent_id IS NOT NULL AND is_batch = FALSE) OR (parent_id IS NULL)', name=op.f('ck_notifications_chk_child_structure')),
    sa.CheckConstraint('(read = FALSE) = (read_at IS NULL)', name=op.f('ck_notifications_read_matches_read_at')),
    sa.ForeignKeyConstraint(['parent_id'], ['notifications.id'], name=op.f('fk_notifications_parent_id_notifications'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_notifications_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications'))
    )
    op.create_index('idx_notifications_batch_children', 'notifications', ['parent_id', sa.literal_column('created_at DESC')], unique=False)
    op.create_index('idx_notifications_batch_key', 'notifications', ['batch_key'], unique=False)
    op.create_index('idx_notifications_batch_key_recent', 'notifications', ['batch_key', 'created_at'], unique=False, postgresql_where=sa.text('parent_id IS NULL'))
    op.create_index('idx_notifications_batch_key_user', 'notifications', ['batch_key', 'user_id'], unique=False)
    op.create_index('idx_notifications_batch_lookup', 'notifications', ['user_id', 'batch_key', 'is_batch', 'created_at'], unique=False)
    op.create_index('idx_notifications_created_at', 'notifications', [sa.literal_column('created_at DESC')], unique=False)
    op.create_index('idx_notifications_is_batch', 'notifications', ['is_batch'], unique=False)
    op.create_index('idx_notifications_last_updated_at', 'notifications', [sa.literal_column('last_updated_at DESC')], unique=False)
    op.create_index('idx_notifications_parent_id', 'notifications', ['parent_id'], unique=False)
    op.create_index('idx_notifications_read', 'notifications', ['read'], unique=False)
    op.create_index('idx_notifications_timeline', 'notifications', ['user_id', 'parent_id', sa.literal_column('last_updated_at DESC'), sa.literal_column('created_at DESC')], unique=False)
    op.create_index('idx_notifications_user_id', 'notifications', ['user_id'], unique=False)
    op.create_index('idx_notifications_user_parent_read', 'notifications', ['user_id', 'parent_id', 'read'], unique=False)
    op.create_table('posts',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(), nullable=True),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('post_type', sa.Enum('daily', 'photo', 'spontaneous', name='post_type'), server_default='daily', nullable=False),
    sa.Column('image_url', sa.String(), nullable=True),
    sa.Column('is_public', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('hearts_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('reactions_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('shares_count', sa.Integer(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_posts_author_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_posts'))
    )
    op.create_index('idx_posts_author_created_desc', 'posts', ['author_id', sa.literal_column('created_at DESC')], unique=False)
    op.create_index('idx_posts_created_at_desc', 'posts', [sa.literal_column('created_at DESC')], unique=False)
    op.create_index('idx_posts_engagement', 'posts', ['hearts_count', 'reactions_count', 'shares_count'], unique=False)
    op.create_index(op.f('ix_posts_author_id'), 'posts', ['author_id'], unique=False)
    op.create_table('comments',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=False),
    sa.Column('post_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('parent_id', sa.Uuid(as_uuid=False), nullable=True),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_comments_author_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parent_id'], ['comments.id'], name=op.f('fk_comments_parent_id_comments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_comments_post_id_posts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_comments'))
    )
    op.create_index(op.f('ix_comments_author_id'), 'comments', ['author_id'], unique=False)
    op.create_index(op.f('ix_comments_parent_id'), 'comments', ['parent_id'], unique=False)
    op.create_index(op.f('ix_comments_post_id'), 'comments', ['post_id'], unique=False)
    op.create_table('emoji_reactions',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('post_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('emoji_code', sa.String(length=50), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("emoji_code ~ '^[a-z0-9_]{1,50}$'", name=op.f('ck_emoji_reactions_emoji_code_format')),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_emoji_reactions_post_id_posts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_emoji_reactions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_emoji_reactions')),
    sa.UniqueConstraint('user_id', 'post_id', name=op.f('uq_emoji_reactions_user_id_post_id'))
    )
    op.create_index(op.f('ix_emoji_reactions_post_id'), 'emoji_reactions', ['post_id'], unique=False)
    op.create_index(op.f('ix_emoji_reactions_user_id'), 'emoji_reactions', ['user_id'], unique=False)
    op.create_table('likes',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('post_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_likes_post_id_posts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_likes_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_likes')),
    sa.UniqueConstraint('user_id', 'post_id', name=op.f('uq_likes_user_id_post_id'))
    )
    op.create_index(op.f('ix_likes_post_id'), 'likes', ['post_id'], unique=False)
    op.create_index(op.f('ix_likes_user_id'), 'likes', ['user_id'], unique=False)
    op.create_table('shares',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('post_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('platform', sa.String(length=30), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("platform IS NULL OR platform IN ('internal', 'copy_link', 'twitter', 'facebook', 'whatsapp', 'email', 'other')", name=op.f('ck_shares_platform_valid')),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_shares_post_id_posts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_shares_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shares'))
    )
    op.create_index(op.f('ix_shares_post_id'), 'shares', ['post_id'], unique=False)
    op.create_index(op.f('ix_shares_user_id'), 'shares', ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_shares_user_id'), table_name='shares')
    op.drop_index(op.f('ix_shares_post_id'), table_name='shares')
    op.drop_table('shares')
    op.drop_index(op.f('ix_likes_user_id'), table_name='likes')
    op.drop_index(op.f('ix_likes_post_id'), table_name='likes')
    op.drop_table('likes')
    op.drop_index(op.f('ix_emoji_reactions_user_id'), table_name='emoji_reactions')
    op.drop_index(op.f('ix_emoji_reactions_post_id'), table_name='emoji_reactions')
    op.drop_table('emoji_reactions')
    op.drop_index(op.f('ix_comments_post_id'), table_name='comments')
    op.drop_index(op.f('ix_comments_parent_id'), table_name='comments')
    op.drop_index(op.f('ix_comments_author_id'), table_name='comments')
    op.drop_table('comments')
    op.drop_index(op.f('ix_posts_author_id'), table_name='posts')
    op.drop_index('idx_posts_engagement', table_name='posts')
    op.drop_index('idx_posts_created_at_desc', table_name='posts')
    op.drop_index('idx_posts_author_created_desc', table_name='posts')
    op.drop_table('posts')
    op.drop_index('idx_notifications_user_parent_read', table_name='notifications')
    op.drop_index('idx_notifications_user_id', table_name='notifications')
    op.drop_index('idx_notifications_timeline', table_name='notifications')
    op.drop_index('idx_notifications_read', table_name='notifications')
    op.drop_index('idx_notifications_parent_id', table_name='notifications')
    op.drop_index('idx_notifications_last_updated_at', table_name='notifications')
    op.drop_index('idx_notifications_is_batch', table_name='notifications')
    op.drop_index('idx_notifications_created_at', table_name='notifications')
    op.drop_index('idx_notifications_batch_lookup', table_name='notifications')
    op.drop_index('idx_notifications_batch_key_user', table_name='notifications')
    op.drop_index('idx_notifications_batch_key_recent', table_name='notifications', postgresql_where=sa.text('parent_id IS NULL'))
    op.drop_index('idx_notifications_batch_key', table_name='notifications')
    op.drop_index('idx_notifications_batch_children', table_name='notifications')
    op.drop_table('notifications')
    op.drop_index('idx_follows_status', table_name='follows')
    op.drop_index('idx_follows_follower_id', table_name='follows')
    op.drop_index('idx_follows_follower_followed', table_name='follows')
    op.drop_index('idx_follows_followed_id', table_name='follows')
    op.drop_index('idx_follows_created_at', table_name='follows')
    op.drop_table('follows')
    op.drop_index(op.f('ix_users_username'), table_name='users')
    op.drop_index(op.f('ix_users_id'), table_name='users')
    op.drop_index(op.f('ix_users_email'), table_name='users')
    op.drop_index('idx_users_username_lower', table_name='users')
    op.drop_index('idx_users_profile_photo_filename', table_name='users')
    op.drop_index('idx_users_display_name', table_name='users')
    op.drop_index('idx_users_city', table_name='users')
    op.drop_table('users')
    sa.Enum(name='post_type').drop(op.get_bind(), checkfirst=True)
