"""engagement: counter_runs.failure_reason, and a partial index of running runs

Revision ID: 0007
Revises: 0006

A run of any mode whose worker died, or whose task was retried after a batch had
committed (the retry starts a new run), stays ``running``. The next run of the
same mode closes such runs once they are older than ENGAGEMENT_SWEEP_STALE_AFTER
(tasks/engagement/reconcile.py, ``close_stale_runs``) and says why in
failure_reason. That statement looks up running runs only: the partial index
keeps it O(running runs), not O(every run ever recorded), as counter_runs gains
a dirty run every 30 s and a refresh run per forced recount.
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("counter_runs", sa.Column("failure_reason", sa.Text(), nullable=True))
    op.create_index("idx_counter_runs_running", "counter_runs", ["mode", "started_at"],
                    postgresql_where=sa.text("status = 'running'"))


def downgrade() -> None:
    op.drop_index("idx_counter_runs_running", table_name="counter_runs")
    op.drop_column("counter_runs", "failure_reason")
