"""How far a checkpointed cell got: the optimizer step its checkpoint was written at and the steps its loop plans,
written when a stop signal gives the cell back (harness.launch.runner). `harness status` and the board price such
a cell by the steps it has left; they priced it whole. Nullable: cells without a checkpoint have none.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0006", "0005"
branch_labels = depends_on = None

COLUMNS = ("checkpoint_step", "checkpoint_total_steps")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
