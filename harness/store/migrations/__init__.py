"""Alembic migrations of the results store: every schema change is a revision in versions/, applied by
harness.store.schema.upgrade when a Store opens (under a lock, so workers starting together upgrade once)."""
