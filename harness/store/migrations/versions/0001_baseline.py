"""Baseline: the store as the harness wrote it before migrations (runs + analyses).

A store created by that harness (no alembic_version table) already has these tables, possibly without the
columns added over its releases: those are added here, all nullable, so old results stay readable.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _runs_columns() -> list[sa.Column]:
    S, I, F, J, T, D = sa.String, sa.Integer, sa.Float, sa.JSON, sa.Text, sa.DateTime
    return [
        sa.Column("id", I, primary_key=True),
        sa.Column("suite", S(200), nullable=False, index=True),
        sa.Column("cell_key", S(64), nullable=False, index=True),
        sa.Column("setting_key", S(64)),
        sa.Column("status", S(20), nullable=False, index=True),
        sa.Column("error", T),
        sa.Column("attempts", I, nullable=False),
        sa.Column("created_at", D, nullable=False),
        sa.Column("started_at", D), sa.Column("finished_at", D),
        sa.Column("config", J, nullable=False),
        sa.Column("model", S(500), nullable=False, index=True),
        sa.Column("task", S(200), nullable=False, index=True),
        sa.Column("task_version", I, nullable=False),
        sa.Column("method", S(50), nullable=False, index=True),
        sa.Column("method_params", J, nullable=False),
        sa.Column("method_label", S(300), nullable=False),
        sa.Column("budget", J, nullable=False),
        sa.Column("seed", I, nullable=False),
        sa.Column("hparams", J, nullable=False),
        sa.Column("learning_rate", F),
        sa.Column("num_processes", I, nullable=False),
        sa.Column("regime", S(20)), sa.Column("parent_id", I, index=True), sa.Column("stage", I),
        *[sa.Column(n, I) for n in ("trainable_params", "added_params", "total_params", "head_params",
                                    "embedding_params", "encoder_params")],
        *[sa.Column(n, F) for n in ("trainable_pct", "train_time_s", "eval_time_s", "peak_memory_mb")],
        sa.Column("peak_memory_kind", S(40)),
        sa.Column("train_examples_per_s", F), sa.Column("train_tokens_per_s", F),
        sa.Column("steps", I), sa.Column("epochs_done", F),
        sa.Column("train_examples", I), sa.Column("eval_examples", I),
        sa.Column("stopped_by", S(40)),
        sa.Column("score", F), sa.Column("best_score", F),
        *[sa.Column(n, J) for n in ("metrics", "best_metrics", "history", "env")],
        sa.Column("command", T), sa.Column("output_dir", T), sa.Column("adapter_path", T),
        sa.Column("adapter_bytes", I), sa.Column("extra", J),
    ]


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("runs"):
        op.create_table("runs", *_runs_columns(), sa.UniqueConstraint("suite", "cell_key", name="uq_suite_cell"))
    else:  # a pre-migration store: add what its release did not have yet
        have = {c["name"] for c in inspector.get_columns("runs")}
        for col in _runs_columns():
            if col.name not in have:
                op.add_column("runs", sa.Column(col.name, col.type, nullable=True))
    if not inspector.has_table("analyses"):
        op.create_table("analyses",
                        sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("run_id", sa.Integer, nullable=False, index=True),
                        sa.Column("suite", sa.String(200), nullable=False, index=True),
                        sa.Column("kind", sa.String(50), nullable=False, index=True),
                        sa.Column("created_at", sa.DateTime, nullable=False),
                        sa.Column("payload", sa.JSON, nullable=False))


def downgrade() -> None:
    op.drop_table("analyses")
    op.drop_table("runs")
