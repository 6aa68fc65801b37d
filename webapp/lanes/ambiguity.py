"""Did a commit land? Resolving a COMMIT whose connection broke before the answer came back.

PostgreSQL finishes or aborts the transaction of a connection it lost, but until that server
process has exited, a look from another connection may see the row missing and then find it a
moment later. So the old server process is ended first (``pg_terminate_backend``) and awaited;
after that the row is there for good, or it never will be. SQLite commits in-process: a failed
commit there did not land.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Table, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

RESOLVE_SECONDS = 10.0  # how long to keep asking a database that is coming back
POLL_SECONDS = 0.1


def backend_of(session: Session) -> int | None:
    """The PostgreSQL server process behind the session's connection (None elsewhere)."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return None
    return connection.connection.driver_connection.info.backend_pid


def committed(engine: Engine, backend: int, table: Table, row_id: int) -> bool:
    """Whether the row ``row_id`` exists once the server process ``backend`` is gone.

    Raises ``SQLAlchemyError`` if the database stays unreachable for ``RESOLVE_SECONDS``: then the
    outcome is still unknown, and the caller must not say that nothing was done.
    """
    deadline = time.monotonic() + RESOLVE_SECONDS
    while True:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
                while connection.execute(
                    text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": backend}
                ).first() is not None:
                    if time.monotonic() > deadline:
                        log.error("server process %s has not exited; reading row %s anyway", backend, row_id)
                        break
                    time.sleep(POLL_SECONDS)
                found = connection.execute(select(table.c.id).where(table.c.id == row_id)).first() is not None
                connection.rollback()
        except SQLAlchemyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL_SECONDS * 5)
            continue
        log.warning("an interrupted commit of row %s %s", row_id, "had landed" if found else "did not land")
        return found
