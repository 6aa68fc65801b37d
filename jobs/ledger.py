"""``ledger.*``: a per-user balance moved by deposits and withdrawals, each applied exactly once.

Every movement is a ``LedgerEntry`` keyed by the request that made it: a request re-run after a
worker crash finds its entry and returns the balance it left, instead of applying it again.
The job's writes commit together with the request's outcome (see ``webapp.lanes.execution``).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from jobs.context import JobContext, JobFailed
from jobs.registry import job_type
from webapp.models import LedgerAccount, LedgerEntry

MOVEMENT_SCHEMA = {
    "properties": {
        "amount": {"type": "integer", "minimum": 1, "maximum": 10**9, "title": "Amount"},
        "memo": {"type": "string", "maxLength": 200, "title": "Memo"},
    },
    "required": ["amount"],
}


@job_type("ledger.deposit", title="Deposit into your ledger", schema=MOVEMENT_SCHEMA, timeout=30)
def deposit(ctx: JobContext, payload: dict) -> dict:
    return {"balance": apply_movement(ctx, payload["amount"], payload.get("memo"))}


@job_type("ledger.withdraw", title="Withdraw from your ledger", schema=MOVEMENT_SCHEMA, timeout=30)
def withdraw(ctx: JobContext, payload: dict) -> dict:
    return {"balance": apply_movement(ctx, -payload["amount"], payload.get("memo"))}


@job_type("ledger.balance", title="Show your ledger balance", schema={}, timeout=30)
def balance(ctx: JobContext, payload: dict) -> dict:
    account = ctx.session.get(LedgerAccount, ctx.user_id)
    return {"balance": account.balance if account else 0}


def apply_movement(ctx: JobContext, amount: int, memo: str | None) -> int:
    """Add ``amount`` (negative to withdraw) to the user's balance once per request; the new balance."""
    # Writing first makes this a write transaction from its first statement (SQLite then takes
    # its lock up front rather than failing to upgrade a stale read).
    _ensure_account(ctx)
    earlier = ctx.session.get(LedgerEntry, ctx.request_id)
    if earlier is not None:
        return earlier.balance_after
    account = ctx.session.scalar(
        select(LedgerAccount)
        .where(LedgerAccount.user_id == ctx.user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if account.balance + amount < 0:
        raise JobFailed(
            "insufficient_funds",
            f"Cannot withdraw {-amount}: the balance is only {account.balance}.",
        )
    account.balance += amount
    ctx.session.add(
        LedgerEntry(
            request_id=ctx.request_id, user_id=ctx.user_id, amount=amount, memo=memo, balance_after=account.balance
        )
    )
    ctx.session.flush()
    return account.balance


def _ensure_account(ctx: JobContext) -> None:
    """Create the user's account at balance 0 unless it exists (safe against a concurrent insert)."""
    dialect = ctx.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    ctx.session.execute(insert(LedgerAccount).values(user_id=ctx.user_id, balance=0).on_conflict_do_nothing())
