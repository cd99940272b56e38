"""search indexing: the dirty queue and its triggers, index versions, PostgreSQL documents, verifications

Revision ID: 0012
Revises: 0011

The triggers are frozen here as SQL. They mark what a search document is made
of (tasks/search/documents.py): a post's own columns, its author's username,
its tags (post_tags and the tag's name). Moderation reaches it through
posts.moderation_hidden. INSERT and DELETE triggers are statement-level with
transition tables (one INSERT per statement, whatever its row count); UPDATE
triggers fire only when a watched column really changed.

Existing posts are marked dirty once, so the first index_dirty pass (or the
reindex `workers migrate` runs when no version is active) indexes them.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

POST_COLUMNS = ("author_id", "title", "content", "is_public", "deleted_at", "moderation_hidden", "privacy_level",
                "created_at")


def _function(name: str, body: str) -> str:
    return (f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n    {body};\n    RETURN NULL;\nEND\n$$")


# (trigger and function name, table, when, body)
TRIGGERS = (
    ("search_dirty_posts_insert", "posts", "AFTER INSERT ON posts REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
     "INSERT INTO search_dirty (entity, entity_id) SELECT 'post', id::text FROM new_rows"),
    ("search_dirty_posts_delete", "posts", "AFTER DELETE ON posts REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
     "INSERT INTO search_dirty (entity, entity_id) SELECT 'post', id::text FROM old_rows"),
    ("search_dirty_posts_update", "posts",
     f"AFTER UPDATE OF {', '.join(POST_COLUMNS)} ON posts FOR EACH ROW "
     f"WHEN (ROW({', '.join('OLD.' + c for c in POST_COLUMNS)}) IS DISTINCT FROM "
     f"ROW({', '.join('NEW.' + c for c in POST_COLUMNS)}))",
     "INSERT INTO search_dirty (entity, entity_id) VALUES ('post', NEW.id::text)"),
    ("search_dirty_users_update", "users",
     "AFTER UPDATE OF username ON users FOR EACH ROW WHEN (OLD.username IS DISTINCT FROM NEW.username)",
     "INSERT INTO search_dirty (entity, entity_id) VALUES ('user', NEW.id::text)"),
    ("search_dirty_post_tags_insert", "post_tags",
     "AFTER INSERT ON post_tags REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
     "INSERT INTO search_dirty (entity, entity_id) SELECT DISTINCT 'post', post_id::text FROM new_rows"),
    ("search_dirty_post_tags_delete", "post_tags",
     "AFTER DELETE ON post_tags REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
     "INSERT INTO search_dirty (entity, entity_id) SELECT DISTINCT 'post', post_id::text FROM old_rows"),
    ("search_dirty_tags_update", "tags",
     "AFTER UPDATE OF name ON tags FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)",
     "INSERT INTO search_dirty (entity, entity_id) VALUES ('tag', NEW.id::text)"),
)

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('search_dirty',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('entity', sa.String(length=10), nullable=False),
    sa.Column('entity_id', sa.Text(), nullable=False),
    sa.Column('marked_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("entity IN ('post', 'user', 'tag')", name=op.f('ck_search_dirty_entity_valid')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_search_dirty'))
    )
    op.create_table('search_documents',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('post_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('username', sa.Text(), nullable=False),
    sa.Column('tags', postgresql.ARRAY(sa.String(length=100)), nullable=False),
    sa.Column('privacy_level', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('document', postgresql.TSVECTOR(), nullable=False),
    sa.PrimaryKeyConstraint('version', 'post_id', name=op.f('pk_search_documents')),
    postgresql_partition_by='LIST (version)'
    )
    op.create_table('search_index_versions',
    sa.Column('id', sa.Integer(), sa.Identity(always=True), nullable=False),
    sa.Column('backend', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('schema_hash', sa.String(length=16), nullable=False),
    sa.Column('documents', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("backend IN ('postgresql', 'typesense')", name=op.f('ck_search_index_versions_backend_valid')),
    sa.CheckConstraint("status IN ('building', 'active', 'retired')", name=op.f('ck_search_index_versions_status_valid')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_search_index_versions'))
    )
    op.create_index('uq_search_index_versions_active', 'search_index_versions', ['backend'], unique=True, postgresql_where=sa.text("status = 'active'"))
    op.create_table('search_verifications',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('backend', sa.String(length=20), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('expected', sa.BigInteger(), nullable=False),
    sa.Column('indexed', sa.BigInteger(), nullable=False),
    sa.Column('removed', sa.BigInteger(), nullable=False),
    sa.Column('missing', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_search_verifications'))
    )
    op.create_index('idx_search_verifications_created', 'search_verifications', ['created_at'], unique=False)
    for name, _table, when, body in TRIGGERS:
        op.execute(_function(name, body))
        op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION {name}()")
    op.execute("INSERT INTO search_dirty (entity, entity_id) SELECT 'post', id::text FROM posts ORDER BY id")


def downgrade() -> None:
    for name, table, _when, _body in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_index('idx_search_verifications_created', table_name='search_verifications')
    op.drop_table('search_verifications')
    op.drop_index('uq_search_index_versions_active', table_name='search_index_versions', postgresql_where=sa.text("status = 'active'"))
    op.drop_table('search_index_versions')
    op.drop_table('search_documents')
    op.drop_table('search_dirty')
