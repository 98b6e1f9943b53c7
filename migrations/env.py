"""Alembic environment: runs migrations on a connection bonedb hands over, or on a URL.

`bonedb db upgrade` passes its own connection in `config.attributes["connection"]`;
the plain `alembic` command uses `-x url=...` or BONEDB_DATABASE_URL.
"""

from alembic import context

from boneclf.store.engine import make_engine, resolve_url
from boneclf.store.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():
    raise SystemExit("bonedb migrations are run online: use `bonedb db upgrade`")
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or resolve_url()
    with make_engine(url).connect() as conn:
        _run(conn)
