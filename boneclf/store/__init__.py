"""The database: schema, engines, migrations, and the queries several layers share.

`store` imports neither `data` nor `ml`; everything above reads and writes through it.
"""

from __future__ import annotations

from sqlalchemy import Engine

from .engine import make_engine
from .migrate import require_head


def open_database(url: str, *, check_schema: bool = True, create: bool = False) -> Engine:
    """An engine on `url`, its schema checked once here rather than in every library call."""
    engine = make_engine(url, create=create)
    if check_schema:
        try:
            require_head(engine)
        except BaseException:
            engine.dispose()
            raise
    return engine
