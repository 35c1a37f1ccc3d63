"""Comparisons a reviewer accepts: each run's training / evaluation FLOPs, achieved FLOP/s and MFU, the threads
it trained with, the time `harness estimate` predicted for it, and the trivial baselines' scores on its dev set.
All nullable: runs from before have none of them, and the tables say so instead of guessing.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0004", "0003"
branch_labels = depends_on = None

COLUMNS = [("train_flops", sa.Float()), ("eval_flops", sa.Float()), ("flops_per_s", sa.Float()),
           ("mfu", sa.Float()), ("num_threads", sa.Integer()), ("predicted_time_s", sa.Float()),
           ("trivial_scores", sa.JSON())]


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name, _ in COLUMNS:
            batch.drop_column(name)
