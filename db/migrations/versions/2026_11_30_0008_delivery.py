"""delivery: preferences, settings, push subscriptions, deliveries, digests, and the due trigger

Revision ID: 0008
Revises: 0007

The trigger marks a top-level, unread, non-low notification in ``delivery_due``
whenever it is created or its batch grows (a newer event or a higher count), in
the recording transaction itself: every writer (our batching, the web tier, a
backfill) is covered, and the mark commits or rolls back with the row.
``delivery.dispatch_due`` reads the marks once they have settled.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# greatest(): a late-arriving older event must not pull the settle time back.
TRIGGER_DDL = (
    """
    CREATE FUNCTION mark_delivery_due() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO delivery_due (notification_id, quiet_since, high)
      VALUES (NEW.id, NEW.last_updated_at, NEW.priority = 'high')
      ON CONFLICT (notification_id) DO UPDATE
        SET quiet_since = greatest(delivery_due.quiet_since, EXCLUDED.quiet_since), high = EXCLUDED.high;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER notifications_delivery_due_insert AFTER INSERT ON notifications
    FOR EACH ROW WHEN (NEW.parent_id IS NULL AND NEW.priority <> 'low' AND NOT NEW.read)
    EXECUTE FUNCTION mark_delivery_due()
    """,
    """
    CREATE TRIGGER notifications_delivery_due_update AFTER UPDATE OF batch_count, last_updated_at ON notifications
    FOR EACH ROW WHEN (NEW.parent_id IS NULL AND NEW.priority <> 'low' AND NOT NEW.read
                       AND (NEW.batch_count > OLD.batch_count OR NEW.last_updated_at > OLD.last_updated_at))
    EXECUTE FUNCTION mark_delivery_due()
    """,
)
DROP_TRIGGER_DDL = (
    "DROP TRIGGER IF EXISTS notifications_delivery_due_update ON notifications",
    "DROP TRIGGER IF EXISTS notifications_delivery_due_insert ON notifications",
    "DROP FUNCTION IF EXISTS mark_delivery_due()",
)


def upgrade() -> None:
    op.create_table('digests',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('period', sa.String(length=10), nullable=False),
    sa.Column('local_date', sa.Date(), nullable=False),
    sa.Column('status', sa.String(length=10), server_default='queued', nullable=False),
    sa.Column('notification_ids', postgresql.ARRAY(sa.Uuid(as_uuid=False)), nullable=False),
    sa.Column('item_count', sa.Integer(), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('message_id', sa.String(length=255), nullable=True),
    sa.Column('provider_message_id', sa.String(length=512), nullable=True),
    sa.Column('error', sa.String(length=1000), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("period IN ('daily', 'weekly')", name=op.f('ck_digests_period_valid')),
    sa.CheckConstraint("status IN ('queued', 'sending', 'sent', 'skipped', 'failed')", name=op.f('ck_digests_status_valid')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_digests_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_digests')),
    sa.UniqueConstraint('user_id', 'period', 'local_date', name=op.f('uq_digests_user_id_period_local_date'))
    )
    op.create_index('idx_digests_in_flight', 'digests', ['claimed_at'], unique=False, postgresql_where=sa.text("status IN ('queued', 'sending')"))
    op.create_table('notification_preferences',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('notification_type', sa.String(length=50), nullable=False),
    sa.Column('channel', sa.String(length=10), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("channel IN ('email', 'push')", name=op.f('ck_notification_preferences_channel_valid')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_notification_preferences_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'notification_type', 'channel', name=op.f('pk_notification_preferences'))
    )
    op.create_table('notification_settings',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=10), server_default='daily', nullable=False),
    sa.Column('timezone', sa.String(length=64), server_default='UTC', nullable=False),
    sa.Column('quiet_start', sa.Time(), nullable=True),
    sa.Column('quiet_end', sa.Time(), nullable=True),
    sa.Column('email_enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("digest IN ('off', 'daily', 'weekly')", name=op.f('ck_notification_settings_digest_valid')),
    sa.CheckConstraint('(quiet_start IS NULL) = (quiet_end IS NULL)', name=op.f('ck_notification_settings_quiet_hours_paired')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_notification_settings_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_notification_settings'))
    )
    op.create_table('push_subscriptions',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('endpoint', sa.Text(), nullable=False),
    sa.Column('p256dh', sa.String(length=128), nullable=False),
    sa.Column('auth', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_success_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failure_count', sa.Integer(), server_default='0', nullable=False),
    sa.CheckConstraint("endpoint ~ '^https?://'", name=op.f('ck_push_subscriptions_endpoint_is_http')),
    sa.CheckConstraint('length(endpoint) <= 2048', name=op.f('ck_push_subscriptions_endpoint_length')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_push_subscriptions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_push_subscriptions')),
    sa.UniqueConstraint('endpoint', name=op.f('uq_push_subscriptions_endpoint'))
    )
    op.create_index('idx_push_subscriptions_user_id', 'push_subscriptions', ['user_id'], unique=False)
    op.create_table('deliveries',
    sa.Column('id', sa.Uuid(as_uuid=False), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('notification_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=10), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('batch_key', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=10), server_default='pending', nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('message_id', sa.String(length=255), nullable=True),
    sa.Column('provider_message_id', sa.String(length=512), nullable=True),
    sa.Column('error', sa.String(length=1000), nullable=True),
    sa.Column('delivered_to', postgresql.ARRAY(sa.Uuid(as_uuid=False)), server_default='{}', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("channel IN ('email', 'push')", name=op.f('ck_deliveries_channel_valid')),
    sa.CheckConstraint("status IN ('pending', 'queued', 'sending', 'sent', 'skipped', 'folded', 'failed')", name=op.f('ck_deliveries_status_valid')),
    sa.CheckConstraint('version >= 1', name=op.f('ck_deliveries_version_positive')),
    sa.ForeignKeyConstraint(['notification_id'], ['notifications.id'], name=op.f('fk_deliveries_notification_id_notifications'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_deliveries_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('notification_id', 'channel', 'version', name=op.f('uq_deliveries_notification_id_channel_version'))
    )
    op.create_index('idx_deliveries_due', 'deliveries', ['due_at'], unique=False, postgresql_where=sa.text("status = 'pending'"))
    op.create_index('idx_deliveries_in_flight', 'deliveries', ['claimed_at'], unique=False, postgresql_where=sa.text("status IN ('queued', 'sending')"))
    op.create_index('idx_deliveries_user_batch', 'deliveries', ['user_id', 'batch_key', 'channel'], unique=False)
    op.create_index('idx_deliveries_user_sent', 'deliveries', ['user_id', 'channel', 'sent_at'], unique=False, postgresql_where=sa.text("status IN ('sending', 'sent')"))
    op.create_index('uq_deliveries_one_pending', 'deliveries', ['notification_id', 'channel'], unique=True, postgresql_where=sa.text("status = 'pending'"))
    op.create_table('delivery_due',
    sa.Column('notification_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('quiet_since', sa.DateTime(timezone=True), nullable=False),
    sa.Column('high', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['notification_id'], ['notifications.id'], name=op.f('fk_delivery_due_notification_id_notifications'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('notification_id', name=op.f('pk_delivery_due'))
    )
    op.create_index('idx_delivery_due_ripe', 'delivery_due', ['high', 'quiet_since'], unique=False)
    for statement in TRIGGER_DDL:
        op.execute(statement)


def downgrade() -> None:
    for statement in DROP_TRIGGER_DDL:
        op.execute(statement)
    op.drop_index('idx_delivery_due_ripe', table_name='delivery_due')
    op.drop_table('delivery_due')
    op.drop_index('uq_deliveries_one_pending', table_name='deliveries', postgresql_where=sa.text("status = 'pending'"))
    op.drop_index('idx_deliveries_user_sent', table_name='deliveries', postgresql_where=sa.text("status IN ('sending', 'sent')"))
    op.drop_index('idx_deliveries_user_batch', table_name='deliveries')
    op.drop_index('idx_deliveries_in_flight', table_name='deliveries', postgresql_where=sa.text("status IN ('queued', 'sending')"))
    op.drop_index('idx_deliveries_due', table_name='deliveries', postgresql_where=sa.text("status = 'pending'"))
    op.drop_table('deliveries')
    op.drop_index('idx_push_subscriptions_user_id', table_name='push_subscriptions')
    op.drop_table('push_subscriptions')
    op.drop_table('notification_settings')
    op.drop_table('notification_preferences')
    op.drop_index('idx_digests_in_flight', table_name='digests', postgresql_where=sa.text("status IN ('queued', 'sending')"))
    op.drop_table('digests')
