"""engagement: extra counters, dirty table, triggers, drift ledger

Revision ID: 0004
Revises: 0003

The new counters start at 0: run ``python -m workers reconcile --full`` (or wait for
the nightly sweep) after upgrading a database that already has rows. A backfill
here would hold the migration's locks for the length of a full recount.
"""
from alembic import op
import sqlalchemy as sa

from tasks.engagement.counters import CounterSpec, drop_trigger_ddl, trigger_ddl

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The counters as of this revision, frozen: a later counter is added by a later
# migration that re-runs trigger_ddl() with the then-current table.
COUNTERS_0004 = (
    CounterSpec("posts", "hearts_count", "likes", "post_id"),
    CounterSpec("posts", "reactions_count", "emoji_reactions", "post_id"),
    CounterSpec("posts", "shares_count", "shares", "post_id"),
    CounterSpec("posts", "comments_count", "comments", "post_id"),
    CounterSpec("comments", "replies_count", "comments", "parent_id"),
    CounterSpec("users", "followers_count", "follows", "followed_id", "status = 'active'", ("status",)),
    CounterSpec("users", "following_count", "follows", "follower_id", "status = 'active'", ("status",)),
    CounterSpec("users", "posts_count", "posts", "author_id"),
)
NEW_COLUMNS = {
    "users": ("followers_count", "following_count", "posts_count"),
    "posts": ("comments_count",),
    "comments": ("replies_count",),
}
EXISTING_COLUMNS = {"posts": ("hearts_count", "reactions_count", "shares_count")}
# (id) INCLUDE (every counter): the sweep's index-only, merge-joinable read of stored values.
COVERING = {
    "users": ("followers_count", "following_count", "posts_count"),
    "posts": ("hearts_count", "reactions_count", "shares_count", "comments_count"),
    "comments": ("replies_count",),
}


def upgrade() -> None:
    for table, columns in NEW_COLUMNS.items():
        for column in columns:
            # A constant default is a catalog-only change in PostgreSQL >= 11: no table rewrite.
            op.add_column(table, sa.Column(column, sa.Integer(), server_default="0", nullable=False))
    for table, columns in (*NEW_COLUMNS.items(), *EXISTING_COLUMNS.items()):
        for column in columns:
            op.create_check_constraint(op.f(f"ck_{table}_{column}_nonnegative"), table, f"{column} >= 0")
    for table, columns in COVERING.items():
        op.create_index(f"idx_{table}_counters", table, ["id"], postgresql_include=list(columns))

    op.create_table(
        "counter_dirty",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("parent_table", sa.Text(), nullable=False),
        sa.Column("parent_id", sa.Text(), nullable=False),
        sa.Column("marked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_counter_dirty")),
    )
    op.create_index("idx_counter_dirty_parent_table_id", "counter_dirty", ["parent_table", "id"])
    op.create_table(
        "counter_runs",
        sa.Column("id", sa.Uuid(as_uuid=False), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("dry_run", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("status", sa.String(length=10), server_default="running", nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("rows_checked", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("rows_fixed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("max_drift", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("chunks_total", sa.Integer(), nullable=True),
        sa.Column("chunks_done", sa.Integer(), server_default="0", nullable=False),
        sa.CheckConstraint("mode IN ('dirty', 'refresh', 'full')", name=op.f("ck_counter_runs_mode_valid")),
        sa.CheckConstraint("status IN ('running', 'finished', 'failed')", name=op.f("ck_counter_runs_status_valid")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_counter_runs")),
    )
    op.create_index("idx_counter_runs_mode_started", "counter_runs", ["mode", "started_at"])
    op.create_table(
        "counter_run_chunks",
        sa.Column("run_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("parent_table", sa.Text(), nullable=False),
        sa.Column("start_id", sa.Text(), nullable=False),
        sa.Column("end_id", sa.Text(), nullable=False),
        sa.Column("rows_checked", sa.BigInteger(), nullable=False),
        sa.Column("rows_fixed", sa.BigInteger(), nullable=False),
        sa.Column("max_drift", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["counter_runs.id"], name=op.f("fk_counter_run_chunks_run_id_counter_runs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "parent_table", "start_id", name=op.f("pk_counter_run_chunks")),
    )
    op.create_table(
        "counter_drift",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("run_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("table_name", sa.Text(), nullable=False),
        sa.Column("column_name", sa.Text(), nullable=False),
        sa.Column("entity_id", sa.Text(), nullable=False),
        sa.Column("stored_value", sa.Integer(), nullable=False),
        sa.Column("true_value", sa.Integer(), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["counter_runs.id"], name=op.f("fk_counter_drift_run_id_counter_runs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_counter_drift")),
    )
    op.create_index(op.f("ix_counter_drift_run_id"), "counter_drift", ["run_id"])
    op.create_index("idx_counter_drift_entity", "counter_drift", ["table_name", "entity_id"])

    for statement in trigger_ddl(COUNTERS_0004):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_trigger_ddl(COUNTERS_0004):
        op.execute(statement)
    op.drop_index("idx_counter_drift_entity", table_name="counter_drift")
    op.drop_index(op.f("ix_counter_drift_run_id"), table_name="counter_drift")
    op.drop_table("counter_drift")
    op.drop_table("counter_run_chunks")
    op.drop_index("idx_counter_runs_mode_started", table_name="counter_runs")
    op.drop_table("counter_runs")
    op.drop_index("idx_counter_dirty_parent_table_id", table_name="counter_dirty")
    op.drop_table("counter_dirty")
    for table in COVERING:
        op.drop_index(f"idx_{table}_counters", table_name=table)
    for table, columns in (*EXISTING_COLUMNS.items(), *NEW_COLUMNS.items()):
        for column in columns:
            op.drop_constraint(op.f(f"ck_{table}_{column}_nonnegative"), table, type_="check")
    for table, columns in NEW_COLUMNS.items():
        for column in columns:
            op.drop_column(table, column)
