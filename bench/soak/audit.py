"""A trigger in the soak's own database that keeps every committed change to a request row.

``lane_requests`` keeps only a request's last ``started_at``/``ended_at``; the audit keeps each
claim, progress write, outcome and deletion, with the statement's clock time and the writing
process (``application_name``: ``soak-web`` or ``soak-pid-<pid>``, see ``named_worker``). Rows
written by a transaction that rolled back vanish with it, so the audit shows only what was done.
Installed after the migrations; it is the soak's instrument, not part of Lanes' schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

INSTALL = """
CREATE TABLE IF NOT EXISTS soak_audit (
    seq bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    op text NOT NULL,
    request_id bigint NOT NULL,
    user_id bigint NOT NULL,
    old_status text,
    new_status text,
    old_attempts integer,
    new_attempts integer,
    app text NOT NULL
);
CREATE OR REPLACE FUNCTION soak_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO soak_audit (op, request_id, user_id, new_status, new_attempts, app)
        VALUES ('insert', NEW.id, NEW.user_id, NEW.status, NEW.attempts, current_setting('application_name'));
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO soak_audit (op, request_id, user_id, old_status, new_status, old_attempts, new_attempts, app)
        VALUES ('update', NEW.id, NEW.user_id, OLD.status, NEW.status, OLD.attempts, NEW.attempts,
                current_setting('application_name'));
        RETURN NEW;
    ELSE
        INSERT INTO soak_audit (op, request_id, user_id, old_status, old_attempts, app)
        VALUES ('delete', OLD.id, OLD.user_id, OLD.status, OLD.attempts, current_setting('application_name'));
        RETURN OLD;
    END IF;
END $$;
DROP TRIGGER IF EXISTS soak_audit ON lane_requests;
CREATE TRIGGER soak_audit AFTER INSERT OR UPDATE OR DELETE ON lane_requests
    FOR EACH ROW EXECUTE FUNCTION soak_audit_row();
"""


@dataclass(frozen=True)
class Change:
    seq: int
    at: float  # epoch seconds (the database's clock: this machine's)
    op: str
    request_id: int
    user_id: int
    old_status: str | None
    new_status: str | None
    old_attempts: int | None
    new_attempts: int | None
    app: str

    @property
    def is_claim(self) -> bool:
        """The row became started with one more attempt (a new run began)."""
        return (self.op == "update" and self.new_status == "started"
                and (self.new_attempts or 0) > (self.old_attempts or 0))

    @property
    def is_end(self) -> bool:
        return self.op == "update" and self.new_status in ("finished", "failed", "canceled")


def install(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(INSTALL)


def changes(connection: psycopg.Connection, user_ids: list[int]) -> list[Change]:
    rows = connection.execute(
        "SELECT seq, at, op, request_id, user_id, old_status, new_status, old_attempts, new_attempts, app"
        " FROM soak_audit WHERE user_id = ANY(%s) ORDER BY seq", (user_ids,)
    ).fetchall()
    return [Change(row[0], _epoch(row[1]), *row[2:]) for row in rows]


def _epoch(moment: datetime) -> float:
    return moment.timestamp()
