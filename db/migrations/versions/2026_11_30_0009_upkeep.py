"""upkeep: sessions and reset tokens, partitioned engagement and audit logs, soft delete, upkeep runs

Revision ID: 0009
Revises: 0008

The partitioned tables are created bare: their partitions (a default one and
one per month) are made by db/partitions.py, which `python -m workers migrate`
runs right after the migrations and `upkeep.ensure_partitions` runs daily.
Dropping a partitioned table drops its partitions, so the downgrade needs no more.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('table_name', sa.String(length=50), nullable=False),
    sa.Column('operation', sa.String(length=10), nullable=False),
    sa.Column('old_values', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('new_values', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id', 'created_at', name=op.f('pk_audit_log')),
    postgresql_partition_by='RANGE (created_at)'
    )
    op.create_index('idx_audit_log_table_name', 'audit_log', ['table_name'], unique=False)
    op.create_table('upkeep_runs',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('job', sa.String(length=50), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('dry_run', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.CheckConstraint("status IN ('ok', 'partial', 'failed')", name=op.f('ck_upkeep_runs_status_valid')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_upkeep_runs'))
    )
    op.create_index('idx_upkeep_runs_job_finished', 'upkeep_runs', ['job', sa.literal_column('finished_at DESC')], unique=False)
    op.create_table('user_engagement_archive',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('post_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('engagement_type', sa.String(length=10), nullable=False),
    sa.Column('value', sa.Numeric(precision=5, scale=2), server_default=sa.text('1.0'), nullable=False),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.CheckConstraint("engagement_type IN ('LIKE', 'SHARE', 'COMMENT', 'VIEW', 'CLICK', 'SAVE')", name=op.f('ck_user_engagement_type_valid')),
    sa.PrimaryKeyConstraint('id', 'created_at', name=op.f('pk_user_engagement_archive')),
    postgresql_partition_by='RANGE (created_at)'
    )
    op.create_index('idx_user_engagement_archive_post_id', 'user_engagement_archive', ['post_id'], unique=False)
    op.create_index('idx_user_engagement_archive_type', 'user_engagement_archive', ['engagement_type'], unique=False)
    op.create_index('idx_user_engagement_archive_user_id', 'user_engagement_archive', ['user_id'], unique=False)
    op.create_table('password_reset_tokens',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=255), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_password_reset_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_password_reset_tokens'))
    )
    op.create_index('idx_reset_tokens_expires', 'password_reset_tokens', ['expires_at'], unique=False)
    op.create_index('idx_reset_tokens_hash', 'password_reset_tokens', ['token_hash'], unique=False)
    op.create_index('idx_reset_tokens_user_id', 'password_reset_tokens', ['user_id'], unique=False)
    op.create_table('user_sessions',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('refresh_token_hash', sa.String(length=255), nullable=False),
    sa.Column('device_info', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('ip_address', postgresql.INET(), nullable=True),
    sa.Column('user_agent', sa.Text(), nullable=True),
    sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_sessions'))
    )
    op.create_index('idx_sessions_active', 'user_sessions', ['is_active'], unique=False, postgresql_where=sa.text('is_active'))
    op.create_index('idx_sessions_expires_at', 'user_sessions', ['expires_at'], unique=False)
    op.create_index('idx_sessions_token_hash', 'user_sessions', ['refresh_token_hash'], unique=False)
    op.create_index('idx_sessions_user_id', 'user_sessions', ['user_id'], unique=False)
    op.create_table('user_engagement',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('post_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('engagement_type', sa.String(length=10), nullable=False),
    sa.Column('value', sa.Numeric(precision=5, scale=2), server_default=sa.text('1.0'), nullable=False),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.CheckConstraint("engagement_type IN ('LIKE', 'SHARE', 'COMMENT', 'VIEW', 'CLICK', 'SAVE')", name=op.f('ck_user_engagement_type_valid')),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_user_engagement_post_id_posts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_engagement_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', 'created_at', name=op.f('pk_user_engagement')),
    postgresql_partition_by='RANGE (created_at)'
    )
    op.create_index('idx_user_engagement_post_id', 'user_engagement', ['post_id'], unique=False)
    op.create_index('idx_user_engagement_type', 'user_engagement', ['engagement_type'], unique=False)
    op.create_index('idx_user_engagement_user_id', 'user_engagement', ['user_id'], unique=False)
    op.add_column('comments', sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('idx_comments_deleted_at', 'comments', ['deleted_at'], unique=False, postgresql_where=sa.text('deleted_at IS NOT NULL'))
    op.add_column('posts', sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('idx_posts_deleted_at', 'posts', ['deleted_at'], unique=False, postgresql_where=sa.text('deleted_at IS NOT NULL'))
    op.add_column('users', sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('idx_users_deleted_at', 'users', ['deleted_at'], unique=False, postgresql_where=sa.text('deleted_at IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('idx_users_deleted_at', table_name='users', postgresql_where=sa.text('deleted_at IS NOT NULL'))
    op.drop_column('users', 'deleted_at')
    op.drop_index('idx_posts_deleted_at', table_name='posts', postgresql_where=sa.text('deleted_at IS NOT NULL'))
    op.drop_column('posts', 'deleted_at')
    op.drop_index('idx_comments_deleted_at', table_name='comments', postgresql_where=sa.text('deleted_at IS NOT NULL'))
    op.drop_column('comments', 'deleted_at')
    op.drop_index('idx_user_engagement_user_id', table_name='user_engagement')
    op.drop_index('idx_user_engagement_type', table_name='user_engagement')
    op.drop_index('idx_user_engagement_post_id', table_name='user_engagement')
    op.drop_table('user_engagement')
    op.drop_index('idx_sessions_user_id', table_name='user_sessions')
    op.drop_index('idx_sessions_token_hash', table_name='user_sessions')
    op.drop_index('idx_sessions_expires_at', table_name='user_sessions')
    op.drop_index('idx_sessions_active', table_name='user_sessions', postgresql_where=sa.text('is_active'))
    op.drop_table('user_sessions')
    op.drop_index('idx_reset_tokens_user_id', table_name='password_reset_tokens')
    op.drop_index('idx_reset_tokens_hash', table_name='password_reset_tokens')
    op.drop_index('idx_reset_tokens_expires', table_name='password_reset_tokens')
    op.drop_table('password_reset_tokens')
    op.drop_index('idx_user_engagement_archive_user_id', table_name='user_engagement_archive')
    op.drop_index('idx_user_engagement_archive_type', table_name='user_engagement_archive')
    op.drop_index('idx_user_engagement_archive_post_id', table_name='user_engagement_archive')
    op.drop_table('user_engagement_archive')
    op.drop_index('idx_upkeep_runs_job_finished', table_name='upkeep_runs')
    op.drop_table('upkeep_runs')
    op.drop_index('idx_audit_log_table_name', table_name='audit_log')
    op.drop_table('audit_log')
