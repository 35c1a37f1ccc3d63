"""A store's identity: one row holding a random id, made once. An output folder is bound to the store whose runs
it holds (harness/launch/output_binding.py): a second store writing the same cell folders would overwrite the
first one's predictions, adapters and record.json, and resume its checkpoints, under that store's rows.

Revision ID: 0005
Revises: 0004
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0005", "0004"
branch_labels = depends_on = None


def upgrade() -> None:
    table = op.create_table("store_info", sa.Column("id", sa.Integer(), primary_key=True),
                            sa.Column("store_id", sa.String(36), nullable=False))
    op.bulk_insert(table, [{"id": 1, "store_id": str(uuid.uuid4())}])


def downgrade() -> None:
    op.drop_table("store_info")
