"""graph and moderation: friendships, comment reactions, groups, conversations, messages, content_moderation

Revision ID: 0011
Revises: 0010

Seed 004's graph and seed 003's moderation table (docs/schema.md maps them). The
five new counters start at 0 on existing rows, which is also their true value:
their source tables are created here, empty. The dirty triggers of the new
source tables are installed from the counter table as it stands at this revision.

The new columns of users, posts and comments have constant defaults, which
PostgreSQL 11+ adds without rewriting the tables. The counters' covering indexes
of users and comments are rebuilt to include the new counters.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from tasks.engagement.counters import counters_on, drop_trigger_ddl, trigger_ddl

GRAPH_SOURCES = ("friendships", "messages", "comment_reactions", "group_members")


def _popular_posts(where: str) -> list[str]:
    """popular_posts as in 0005, with its listing condition (db/visibility.py's public_post_sql as of 0011)."""
    return [
        "DROP MATERIALIZED VIEW IF EXISTS popular_posts",
        f"""CREATE MATERIALIZED VIEW popular_posts AS
        SELECT p.id, p.author_id, u.username, p.post_type, p.created_at,
               p.hearts_count, p.reactions_count, p.shares_count, p.engagement_score
        FROM posts p JOIN users u ON u.id = p.author_id
        WHERE {where} AND p.engagement_score > 0
        ORDER BY p.engagement_score DESC
        LIMIT 1000
        WITH DATA""",
        "CREATE UNIQUE INDEX idx_popular_posts_id ON popular_posts (id)",
        "CREATE INDEX idx_popular_posts_score ON popular_posts (engagement_score DESC)",
    ]


LISTED_0011 = ("p.is_public AND p.deleted_at IS NULL AND NOT p.moderation_hidden "
               "AND p.privacy_level = 'public'")

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('conversations',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversations'))
    )
    op.create_table('content_moderation',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('content_type', sa.String(length=20), nullable=False),
    sa.Column('content_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('content_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=True),
    sa.Column('moderator_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=20), server_default='PENDING', nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('automated_score', sa.Numeric(precision=3, scale=2), nullable=False),
    sa.Column('signals', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("content_type IN ('POST', 'COMMENT')", name=op.f('ck_content_moderation_content_type_valid')),
    sa.CheckConstraint("status IN ('PENDING', 'APPROVED', 'REJECTED', 'FLAGGED')", name=op.f('ck_content_moderation_status_valid')),
    sa.CheckConstraint('automated_score BETWEEN 0 AND 1', name=op.f('ck_content_moderation_automated_score_range')),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_content_moderation_author_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['moderator_id'], ['users.id'], name=op.f('fk_content_moderation_moderator_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_content_moderation'))
    )
    op.create_index('idx_moderation_content', 'content_moderation', ['content_type', 'content_id'], unique=False)
    op.create_index('idx_moderation_flagged', 'content_moderation', ['created_at'], unique=False, postgresql_where=sa.text("status = 'FLAGGED'"))
    op.create_index('idx_moderation_moderator', 'content_moderation', ['moderator_id'], unique=False)
    op.create_index('uq_moderation_content_version', 'content_moderation', ['content_type', 'content_id', 'content_hash'], unique=True)
    op.create_table('conversation_members',
    sa.Column('conversation_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('id', sa.String(length=60), sa.Computed("conversation_id::text || ':' || user_id::text", persisted=True), nullable=False),
    sa.Column('unread_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_read_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('joined_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('unread_count >= 0', name=op.f('ck_conversation_members_unread_count_nonnegative')),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_conversation_members_conversation_id_conversations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_conversation_members_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversation_members')),
    sa.UniqueConstraint('conversation_id', 'user_id', name=op.f('uq_conversation_members_conversation_id_user_id'))
    )
    op.create_index('idx_conversation_members_counters', 'conversation_members', ['id'], unique=False, postgresql_include=['unread_count'])
    op.create_index(op.f('ix_conversation_members_user_id'), 'conversation_members', ['user_id'], unique=False)
    op.create_table('friendships',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user1_id', sa.Integer(), nullable=False),
    sa.Column('user2_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'accepted', 'blocked')", name=op.f('ck_friendships_status_valid')),
    sa.CheckConstraint('user1_id <> user2_id', name=op.f('ck_friendships_no_self_friendship')),
    sa.ForeignKeyConstraint(['user1_id'], ['users.id'], name=op.f('fk_friendships_user1_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user2_id'], ['users.id'], name=op.f('fk_friendships_user2_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_friendships'))
    )
    op.create_index('idx_friendships_status', 'friendships', ['status'], unique=False)
    op.create_index(op.f('ix_friendships_user1_id'), 'friendships', ['user1_id'], unique=False)
    op.create_index(op.f('ix_friendships_user2_id'), 'friendships', ['user2_id'], unique=False)
    op.create_index('uq_friendships_pair', 'friendships', [sa.literal_column('least(user1_id, user2_id)'), sa.literal_column('greatest(user1_id, user2_id)')], unique=True)
    op.create_table('groups',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('cover_photo_url', sa.Text(), nullable=True),
    sa.Column('privacy_level', sa.String(length=20), server_default='closed', nullable=False),
    sa.Column('admin_id', sa.Integer(), nullable=False),
    sa.Column('member_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("privacy_level IN ('open', 'closed', 'secret')", name=op.f('ck_groups_privacy_level_valid')),
    sa.CheckConstraint('member_count >= 0', name=op.f('ck_groups_member_count_nonnegative')),
    sa.ForeignKeyConstraint(['admin_id'], ['users.id'], name=op.f('fk_groups_admin_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_groups'))
    )
    op.create_index('idx_groups_counters', 'groups', ['id'], unique=False, postgresql_include=['member_count'])
    op.create_index(op.f('ix_groups_admin_id'), 'groups', ['admin_id'], unique=False)
    op.create_table('group_members',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('group_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=20), server_default='member', nullable=False),
    sa.Column('joined_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("role IN ('admin', 'moderator', 'member')", name=op.f('ck_group_members_role_valid')),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_group_members_group_id_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_group_members_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_group_members')),
    sa.UniqueConstraint('group_id', 'user_id', name=op.f('uq_group_members_group_id_user_id'))
    )
    op.create_index(op.f('ix_group_members_user_id'), 'group_members', ['user_id'], unique=False)
    op.create_table('messages',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('sender_id', sa.Integer(), nullable=False),
    sa.Column('receiver_id', sa.Integer(), nullable=False),
    sa.Column('conversation_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('message_type', sa.String(length=20), server_default='text', nullable=False),
    sa.Column('media_url', sa.Text(), nullable=True),
    sa.Column('is_read', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('inbox_id', sa.String(length=60), sa.Computed("conversation_id::text || ':' || receiver_id::text", persisted=True), nullable=False),
    sa.CheckConstraint("message_type IN ('text', 'image', 'video', 'file')", name=op.f('ck_messages_message_type_valid')),
    sa.CheckConstraint('sender_id <> receiver_id', name=op.f('ck_messages_no_self_message')),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_messages_conversation_id_conversations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['inbox_id'], ['conversation_members.id'], name=op.f('fk_messages_inbox_id_conversation_members'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['receiver_id'], ['users.id'], name=op.f('fk_messages_receiver_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sender_id'], ['users.id'], name=op.f('fk_messages_sender_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages'))
    )
    op.create_index('idx_messages_conversation_created', 'messages', ['conversation_id', 'created_at'], unique=False)
    op.create_index('idx_messages_created_at_brin', 'messages', ['created_at'], unique=False, postgresql_using='brin')
    op.create_index('idx_messages_inbox_unread', 'messages', ['inbox_id'], unique=False, postgresql_where=sa.text('NOT is_read'))
    op.create_index('idx_messages_receiver_unread', 'messages', ['receiver_id'], unique=False, postgresql_where=sa.text('NOT is_read'))
    op.create_index(op.f('ix_messages_sender_id'), 'messages', ['sender_id'], unique=False)
    op.create_table('comment_reactions',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('comment_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('type', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("type IN ('like', 'love', 'laugh', 'angry', 'sad')", name=op.f('ck_comment_reactions_type_valid')),
    sa.ForeignKeyConstraint(['comment_id'], ['comments.id'], name=op.f('fk_comment_reactions_comment_id_comments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_comment_reactions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_comment_reactions')),
    sa.UniqueConstraint('user_id', 'comment_id', 'type', name=op.f('uq_comment_reactions_user_id_comment_id_type'))
    )
    op.create_index(op.f('ix_comment_reactions_comment_id'), 'comment_reactions', ['comment_id'], unique=False)
    op.create_index(op.f('ix_comment_reactions_user_id'), 'comment_reactions', ['user_id'], unique=False)
    op.add_column('comments', sa.Column('like_count', sa.Integer(), server_default='0', nullable=False))
    op.add_column('comments', sa.Column('moderation_hidden', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('posts', sa.Column('privacy_level', sa.String(length=20), server_default='public', nullable=False))
    op.add_column('posts', sa.Column('moderation_hidden', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('users', sa.Column('friends_count', sa.Integer(), server_default='0', nullable=False))
    op.add_column('users', sa.Column('unread_messages_count', sa.Integer(), server_default='0', nullable=False))
    op.create_check_constraint(op.f('ck_posts_privacy_level_valid'), 'posts',
                               "privacy_level IN ('public', 'friends', 'custom')")
    for table, column in (('users', 'friends_count'), ('users', 'unread_messages_count'), ('comments', 'like_count')):
        op.create_check_constraint(op.f(f'ck_{table}_{column}_nonnegative'), table, f'{column} >= 0')
    _rebuild_counters_index('users', ['followers_count', 'following_count', 'posts_count', 'friends_count',
                                      'unread_messages_count'])
    _rebuild_counters_index('comments', ['replies_count', 'like_count'])
    for statement in trigger_ddl(counters_on(GRAPH_SOURCES)):
        op.execute(statement)
    for statement in _popular_posts(LISTED_0011):
        op.execute(statement)


def _rebuild_counters_index(table: str, columns: list[str]) -> None:
    op.drop_index(f'idx_{table}_counters', table_name=table)
    op.create_index(f'idx_{table}_counters', table, ['id'], postgresql_include=columns)


def downgrade() -> None:
    for statement in _popular_posts("p.is_public"):
        op.execute(statement)
    for statement in drop_trigger_ddl(counters_on(GRAPH_SOURCES)):
        op.execute(statement)
    _rebuild_counters_index('users', ['followers_count', 'following_count', 'posts_count'])
    _rebuild_counters_index('comments', ['replies_count'])
    for table, column in (('users', 'friends_count'), ('users', 'unread_messages_count'), ('comments', 'like_count')):
        op.drop_constraint(op.f(f'ck_{table}_{column}_nonnegative'), table, type_='check')
    op.drop_constraint(op.f('ck_posts_privacy_level_valid'), 'posts', type_='check')
    op.drop_column('users', 'unread_messages_count')
    op.drop_column('users', 'friends_count')
    op.drop_column('posts', 'moderation_hidden')
    op.drop_column('posts', 'privacy_level')
    op.drop_column('comments', 'moderation_hidden')
    op.drop_column('comments', 'like_count')
    op.drop_index(op.f('ix_comment_reactions_user_id'), table_name='comment_reactions')
    op.drop_index(op.f('ix_comment_reactions_comment_id'), table_name='comment_reactions')
    op.drop_table('comment_reactions')
    op.drop_index(op.f('ix_messages_sender_id'), table_name='messages')
    op.drop_index('idx_messages_receiver_unread', table_name='messages', postgresql_where=sa.text('NOT is_read'))
    op.drop_index('idx_messages_inbox_unread', table_name='messages', postgresql_where=sa.text('NOT is_read'))
    op.drop_index('idx_messages_created_at_brin', table_name='messages', postgresql_using='brin')
    op.drop_index('idx_messages_conversation_created', table_name='messages')
    op.drop_table('messages')
    op.drop_index(op.f('ix_group_members_user_id'), table_name='group_members')
    op.drop_table('group_members')
    op.drop_index(op.f('ix_groups_admin_id'), table_name='groups')
    op.drop_index('idx_groups_counters', table_name='groups', postgresql_include=['member_count'])
    op.drop_table('groups')
    op.drop_index('uq_friendships_pair', table_name='friendships')
    op.drop_index(op.f('ix_friendships_user2_id'), table_name='friendships')
    op.drop_index(op.f('ix_friendships_user1_id'), table_name='friendships')
    op.drop_index('idx_friendships_status', table_name='friendships')
    op.drop_table('friendships')
    op.drop_index(op.f('ix_conversation_members_user_id'), table_name='conversation_members')
    op.drop_index('idx_conversation_members_counters', table_name='conversation_members', postgresql_include=['unread_count'])
    op.drop_table('conversation_members')
    op.drop_index('uq_moderation_content_version', table_name='content_moderation')
    op.drop_index('idx_moderation_moderator', table_name='content_moderation')
    op.drop_index('idx_moderation_flagged', table_name='content_moderation', postgresql_where=sa.text("status = 'FLAGGED'"))
    op.drop_index('idx_moderation_content', table_name='content_moderation')
    op.drop_table('content_moderation')
    op.drop_table('conversations')
