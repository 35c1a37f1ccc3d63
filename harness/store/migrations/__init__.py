"""Alembic migrations of the results store: every schema change is a revision in versions/, applied by
harness.store.db.Store on open (under a lock, so workers starting together upgrade once)."""
