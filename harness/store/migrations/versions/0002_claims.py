"""Claims: the lease a worker holds on the cell it trains, and types that do not overflow on PostgreSQL.

- lease: worker_id, host, pid, Slurm job / array task / restart count, claimed_at, heartbeat_at;
- PostgreSQL enforces String(n): suite, model, task and method labels (a long sweep or joined multi-task
  names) become TEXT; parameter counts, seeds and byte sizes become BIGINT (a 7B model overflows INTEGER).
  SQLite stores both as they are, so it is left alone.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

LEASE = [("worker_id", sa.String(200)), ("host", sa.String(255)), ("pid", sa.Integer()),
         ("slurm_job_id", sa.String(64)), ("slurm_array_task_id", sa.Integer()),
         ("slurm_restart_count", sa.Integer()), ("claimed_at", sa.DateTime()), ("heartbeat_at", sa.DateTime())]
TO_TEXT = ("suite", "model", "task", "method_label", "setting_key")
TO_BIGINT = ("trainable_params", "added_params", "total_params", "head_params", "embedding_params",
             "encoder_params", "seed", "adapter_bytes")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name, kind in LEASE:
            batch.add_column(sa.Column(name, kind, nullable=True))
    op.create_index("ix_runs_suite_status", "runs", ["suite", "status"])
    if op.get_bind().dialect.name == "postgresql":
        for name in TO_TEXT:
            op.alter_column("runs", name, type_=sa.Text())
        op.alter_column("analyses", "suite", type_=sa.Text())
        for name in TO_BIGINT:
            op.alter_column("runs", name, type_=sa.BigInteger())


def downgrade() -> None:
    op.drop_index("ix_runs_suite_status", "runs")
    with op.batch_alter_table("runs") as batch:
        for name, _ in LEASE:
            batch.drop_column(name)
