"""The database fence of a lane: which lane worker may claim its requests.

Redis leases are the fast path that decides which supervisor forks a lane worker, but Redis can
forget them (FLUSHDB, a restart without persistence) while the worker still runs. So a lane worker
also holds its lane's row in ``lane_owners``, stamped with an expiry on the database's own clock,
and renews it as it goes. Every claim checks that row in the same statement, and a new holder
can take it only after the old one released it or stopped renewing for ``LANES_LEASE_SECONDS``.
The rows carry the fence: no database connection is pinned per lane (as a session advisory lock
would be), so lane workers may share a transaction-mode pooler and outnumber the database's
connections. Outcomes are fenced by the request row itself: a re-claim bumps ``attempts``, and an
outcome is recorded only for the attempt that the recorder claimed.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, bindparam, exists, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from webapp.extensions import db
from webapp.models import LaneOwner


class database_clock_ms(FunctionElement):  # noqa: N801 - an SQL function, named like one
    """The database server's clock in milliseconds since the epoch: one clock for every host."""

    type = BigInteger()
    inherit_cache = True


@compiles(database_clock_ms, "postgresql")
def _clock_postgresql(_element, _compiler, **_kw):
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"


@compiles(database_clock_ms, "sqlite")
def _clock_sqlite(_element, _compiler, **_kw):
    return "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"


def held_by(holder_param: str = "fence_holder", user_param: str = "lane_user"):
    """SQL condition: the lane's fence is held, unexpired, by the bound holder."""
    return exists().where(
        LaneOwner.user_id == bindparam(user_param),
        LaneOwner.holder == bindparam(holder_param),
        LaneOwner.expires_ms > database_clock_ms(),
    )


def _acquire_statement(dialect: str):
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    expires = database_clock_ms() + bindparam("ttl_ms")
    statement = insert(LaneOwner).values(
        user_id=bindparam("lane_user"), holder=bindparam("fence_holder"), expires_ms=expires
    )
    return statement.on_conflict_do_update(
        index_elements=[LaneOwner.user_id],
        set_={"holder": statement.excluded.holder, "expires_ms": statement.excluded.expires_ms},
        # Taken over only once lapsed, or by its own holder again.
        where=(LaneOwner.expires_ms <= database_clock_ms()) | (LaneOwner.holder == statement.excluded.holder),
    ).returning(LaneOwner.holder)


_ACQUIRE = {}
_RENEW = (
    update(LaneOwner)
    .where(
        LaneOwner.user_id == bindparam("lane_user"), LaneOwner.holder == bindparam("fence_holder"),
        LaneOwner.expires_ms > database_clock_ms(),
    )
    .values(expires_ms=database_clock_ms() + bindparam("ttl_ms"))
)
_RELEASE = (
    update(LaneOwner)
    .where(LaneOwner.user_id == bindparam("lane_user"), LaneOwner.holder == bindparam("fence_holder"))
    .values(expires_ms=0)
)
_HOLDER = select(LaneOwner.holder).where(
    LaneOwner.user_id == bindparam("lane_user"), LaneOwner.expires_ms > database_clock_ms()
)


class LaneFence:
    """One lane worker's hold on its lane's ``lane_owners`` row."""

    def __init__(self, engine: Engine, user_id: int, holder: str, seconds: float):
        self.engine = engine  # kept: the renewing thread has no app context
        self.holder = holder
        self.params = {"lane_user": user_id, "fence_holder": holder, "ttl_ms": int(seconds * 1000)}

    def acquire(self) -> bool:
        """Take the fence unless another holder's is still live."""
        dialect = self.engine.dialect.name
        if dialect not in _ACQUIRE:
            _ACQUIRE[dialect] = _acquire_statement(dialect)
        return self._run(_ACQUIRE[dialect], lambda result: result.first() is not None)

    def renew(self) -> bool:
        """Extend the fence; False once it lapsed (another worker may own the lane now)."""
        return self._run(_RENEW, lambda result: result.rowcount == 1)

    def release(self) -> None:
        """Let the next lane worker take over at once (a no-op once another holds it)."""
        self._run(_RELEASE, lambda result: None)

    def _run(self, statement, read):
        """Run one of the fence's statements, committed by itself, and ``read`` its result.

        Each is a single statement, so it runs on an autocommit connection: one round trip, not
        three (BEGIN, the statement, COMMIT). A connection the database dropped (a restart) fails
        once, and SQLAlchemy then renews the pool: so that is tried again at once (worker processes
        do not ping a pooled connection before using it). Each statement is idempotent for its
        holder, so a second run changes nothing more.
        """
        try:
            return self._run_once(statement, read)
        except DBAPIError as problem:
            if not problem.connection_invalidated:
                raise
        return self._run_once(statement, read)

    def _run_once(self, statement, read):
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return read(connection.execute(statement, self.params))


def current_holder(user_id: int) -> str | None:
    """Who holds the lane's fence now (None when nobody's is live)."""
    return db.session.scalar(_HOLDER, {"lane_user": user_id})

