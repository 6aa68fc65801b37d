"""What the checks read from the soak's database once the run is over: rows, ledgers, the audit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from . import audit


@dataclass(frozen=True)
class Row:
    id: int
    user_id: int
    type: str
    payload: dict
    status: str
    result: dict | None
    error_code: str | None
    attempts: int
    key: str | None
    started_at: float | None
    ended_at: float | None


@dataclass(frozen=True)
class Entry:
    request_id: int
    user_id: int
    amount: int
    balance_after: int


@dataclass
class Evidence:
    rows: dict[int, Row]
    balances: dict[int, int]  # user id -> ledger_accounts.balance
    entries: dict[int, Entry]  # request id -> ledger entry
    changes: list[audit.Change]


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def collect(dsn: str, user_ids: list[int]) -> Evidence:
    with psycopg.connect(dsn) as connection:
        rows = {
            row[0]: Row(*row[:9], _epoch(row[9]), _epoch(row[10]))
            for row in connection.execute(
                "SELECT id, user_id, type, payload, status, result, error_code, attempts, idempotency_key,"
                " started_at, ended_at FROM lane_requests WHERE user_id = ANY(%s) ORDER BY id", (user_ids,)
            )
        }
        balances = dict(connection.execute(
            "SELECT user_id, balance FROM ledger_accounts WHERE user_id = ANY(%s)", (user_ids,)
        ).fetchall())
        entries = {
            row[0]: Entry(*row)
            for row in connection.execute(
                "SELECT request_id, user_id, amount, balance_after FROM ledger_entries WHERE user_id = ANY(%s)",
                (user_ids,),
            )
        }
        changes = audit.changes(connection, user_ids)
    return Evidence(rows, balances, entries, changes)


def unended(dsn: str, request_ids: list[int]) -> int:
    """How many of these requests are missing or not yet ended (finished, failed or canceled)."""
    with psycopg.connect(dsn, connect_timeout=5) as connection:
        ended = connection.execute(
            "SELECT count(*) FROM lane_requests WHERE id = ANY(%s) AND status IN ('finished', 'failed', 'canceled')",
            (request_ids,),
        ).fetchone()[0]
    return len(request_ids) - ended
