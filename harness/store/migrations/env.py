"""Alembic environment: the store hands over an open connection (Store.upgrade); `alembic -x url=URL upgrade
head` with a config whose script_location is this folder (`alembic -c FILE`: there is no alembic.ini here) works
too, on the store's own engine."""

from alembic import context


def _run(connection) -> None:
    # SQLite cannot ALTER most things in place: batch mode copies the table instead
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from harness.store.engine import make_engine, write_transaction

    # the store's engine and write lock, as Store.upgrade migrates: a bare create_engine's transaction waited the
    # driver's 5 s for a worker's write lock, and took it only at its first write (a read before it, in WAL mode:
    # "database is locked" at once once the worker had written), so a worker holding it 15 s failed the migration
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    engine = make_engine(url)
    try:
        with write_transaction(engine) as conn:
            _run(conn)
    finally:
        engine.dispose()
