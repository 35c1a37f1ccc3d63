"""Analyses as work items: an end-of-suite analysis (work_item "suite") is claimed once per (run, kind) by the
worker whose insert wins (unique constraint), leased (worker_id, heartbeat_at) and then completed or failed.
Existing rows keep work_item NULL (rows asked for by hand, which may repeat) and status NULL (completed).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0003", "0002"
branch_labels = depends_on = None

COLUMNS = [("work_item", sa.String(20)), ("status", sa.String(20)), ("error", sa.Text()),
           ("worker_id", sa.String(200)), ("heartbeat_at", sa.DateTime())]


def upgrade() -> None:
    with op.batch_alter_table("analyses") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))
        batch.create_unique_constraint("uq_analyses_work_item", ["run_id", "kind", "work_item"])


def downgrade() -> None:
    with op.batch_alter_table("analyses") as batch:
        batch.drop_constraint("uq_analyses_work_item", type_="unique")
        for name, _ in COLUMNS:
            batch.drop_column(name)
