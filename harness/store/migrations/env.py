"""Alembic environment: the store hands over an open connection (Store.upgrade); `alembic -x url=URL upgrade
head` from this folder works too."""

from alembic import context
from sqlalchemy import create_engine


def _run(connection) -> None:
    # SQLite cannot ALTER most things in place: batch mode copies the table instead
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    with create_engine(url).begin() as conn:
        _run(conn)
