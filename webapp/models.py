"""Database models: users, API tokens, the request log, and the ledger and export tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    literal_column,
)
from sqlalchemy.orm import Mapped, mapped_column

from webapp.extensions import db

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

QUEUED, STARTED, FINISHED, FAILED, CANCELED = "queued", "started", "finished", "failed", "canceled"
PENDING_STATUSES = (QUEUED, STARTED)
TERMINAL_STATUSES = (FINISHED, FAILED, CANCELED)
STATUSES = (QUEUED, STARTED, FINISHED, FAILED, CANCELED)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(db.TypeDecorator):
    """A timestamp that always comes back timezone-aware in UTC (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value, dialect):
        if value is not None:
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def lane_name(self) -> str:
        return f"lane:{self.id}"


class ApiToken(db.Model):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LaneRequest(db.Model):
    """One submitted request; its id is also the RQ job id in the user's lane."""

    __tablename__ = "lane_requests"
    __table_args__ = (
        Index("ix_lane_requests_user_id_id", "user_id", "id"),
        Index("ix_lane_requests_user_status_id", "user_id", "status", "id"),
        Index("ix_lane_requests_status_id", "status", "id"),
        Index("ux_lane_requests_user_idempotency", "user_id", "idempotency_key", unique=True),
        Index("ix_lane_requests_ended_at", "ended_at"),  # the admin charts: what ended in the last hour
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    result: Mapped[dict | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[int | None] = mapped_column(Integer)
    progress_message: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    body_digest: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def error(self) -> dict | None:
        return error_object(self.error_code, self.error_message)


def error_object(code: str | None, message: str | None) -> dict | None:
    """A request's ``error`` as the API shows it, from its two columns (None when it has none)."""
    if code is None:
        return None
    return {"code": code, "message": message or ""}


class LedgerAccount(db.Model):
    __tablename__ = "ledger_accounts"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerEntry(db.Model):
    """A ledger movement keyed by the request that made it, so a re-run cannot apply it twice."""

    __tablename__ = "ledger_entries"

    request_id: Mapped[int] = mapped_column(
        ForeignKey("lane_requests.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)  # signed: withdrawals are negative
    memo: Mapped[str | None] = mapped_column(String(200))
    balance_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def export_cutoff(ttl_days: int) -> datetime:
    """Exports created before this have expired (``LANES_EXPORT_TTL_DAYS``)."""
    return utcnow() - timedelta(days=ttl_days)


class ExportFile(db.Model):
    """A report export kept in the database, so any web host can serve it."""

    __tablename__ = "export_files"

    request_id: Mapped[int] = mapped_column(
        ForeignKey("lane_requests.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(100))
    content_type: Mapped[str] = mapped_column(String(100))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    rows: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LaneOwner(db.Model):
    """The lane worker that may claim a lane's requests: the fence that survives Redis losing its leases.

    A lane worker holds this row (``holder``) while ``expires_ms`` (the database's clock) lies ahead,
    renewing it as it goes; another may take it only once it has lapsed or been released.
    """

    __tablename__ = "lane_owners"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_ms: Mapped[int] = mapped_column(BigInteger)


class RequestLogLine(db.Model):
    """One line a job wrote with ``ctx.log``; kept with its request (bounded by ``request_logs``)."""

    __tablename__ = "request_log_lines"
    __table_args__ = (Index("ix_request_log_lines_request_id_id", "request_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("lane_requests.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    text: Mapped[str] = mapped_column(Text)


class UserSession(db.Model):
    """A browser sign-in, checked on every request: ending it here ends the cookie everywhere."""

    __tablename__ = "user_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the random ``sid`` in the signed cookie
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SystemEvent(db.Model):
    """One line of the system log: who did what to whom, from where, when. Never a secret."""

    __tablename__ = "system_events"
    __table_args__ = (Index("ix_system_events_kind_id", "kind", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict | None] = mapped_column(JSON)


def is_pending(status_column):
    """SQL: ``status IN ('queued', 'started')``, with the statuses inline.

    An IN list of bound values is an "expanding" parameter that SQLAlchemy renders anew on every
    execution (a measurable share of a lane worker's CPU per job); inline literals compile once.
    """
    return status_column.in_([literal_column(f"'{status}'") for status in PENDING_STATUSES])

