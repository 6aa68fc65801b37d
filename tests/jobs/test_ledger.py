"""The ledger: balances a sequential replay predicts, refused overdrafts, no double effect on re-run."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import update


def test_balance_matches_a_sequential_replay_of_the_operations(make_user, lane_of, start_worker):
    lane = lane_of(make_user("alice"))
    rng = random.Random(20240611)
    operations = [("ledger.withdraw", 5)]  # an empty account refuses any withdrawal
    for _ in range(39):
        kind = "ledger.deposit" if rng.random() < 0.55 else "ledger.withdraw"
        operations.append((kind, rng.randint(1, 120)))

    expected = []  # (status, error code, balance after) per operation, replayed in order
    balance = 0
    for kind, amount in operations:
        if kind == "ledger.withdraw" and amount > balance:
            expected.append(("failed", "insufficient_funds", None))
            continue
        balance += amount if kind == "ledger.deposit" else -amount
        expected.append(("finished", None, balance))
    assert sum(1 for status, _, _ in expected if status == "failed") >= 3, "the mix should include refusals"

    first_balance = lane.submit("ledger.balance", {})
    ids = [lane.submit(kind, {"amount": amount, "memo": f"op {i}"}) for i, (kind, amount) in enumerate(operations)]
    last_balance = lane.submit("ledger.balance", {})
    start_worker()

    rows = lane.wait_ended([first_balance, *ids, last_balance])
    assert rows[0].status == "finished" and rows[0].result == {"balance": 0}
    outcomes = [(row.status, row.error_code, row.result["balance"] if row.result else None) for row in rows[1:-1]]
    assert outcomes == expected
    assert rows[-1].status == "finished"
    assert rows[-1].result == {"balance": balance}
    refused = next(row for row in rows[1:-1] if row.status == "failed")
    assert "balance" in refused.error_message


def test_rerunning_the_same_deposit_does_not_apply_it_twice(app, make_user, lane_of):
    from webapp.extensions import db
    from webapp.lanes.execution import run_request
    from webapp.models import LaneRequest, LedgerAccount, LedgerEntry

    user_id = make_user("alice")
    lane = lane_of(user_id)
    deposit = lane.submit("ledger.deposit", {"amount": 70})
    with app.app_context():
        run_request(deposit, user_id)
        # As if a worker had died right after the job: the request is re-claimed and run again.
        db.session.execute(update(LaneRequest).where(LaneRequest.id == deposit).values(status="started"))
        db.session.commit()
        run_request(deposit, user_id)

    row = lane.row(deposit)
    assert (row.status, row.attempts, row.result) == ("finished", 2, {"balance": 70})
    with app.app_context():
        assert db.session.get(LedgerAccount, user_id).balance == 70
        assert db.session.query(LedgerEntry).filter_by(user_id=user_id).count() == 1

    second = lane.submit("ledger.deposit", {"amount": 30})
    with app.app_context():
        run_request(second, user_id)
    assert lane.row(second).result == {"balance": 100}


def test_a_refused_withdrawal_leaves_the_balance_alone(app, make_user, lane_of):
    from webapp.extensions import db
    from webapp.lanes.execution import run_request
    from webapp.models import LedgerEntry

    user_id = make_user("alice")
    lane = lane_of(user_id)
    ids = [
        lane.submit("ledger.deposit", {"amount": 10}),
        lane.submit("ledger.withdraw", {"amount": 11}),
        lane.submit("ledger.withdraw", {"amount": 10, "memo": "all of it"}),
        lane.submit("ledger.balance", {}),
    ]
    with app.app_context():
        run_request(ids[-1], user_id)
        memos = [entry.memo for entry in db.session.query(LedgerEntry).order_by(LedgerEntry.request_id)]

    rows = lane.rows(ids)
    assert [(row.status, row.error_code) for row in rows] == [
        ("finished", None), ("failed", "insufficient_funds"), ("finished", None), ("finished", None),
    ]
    assert [row.result for row in rows] == [{"balance": 10}, None, {"balance": 0}, {"balance": 0}]
    assert memos == [None, "all of it"]


def test_each_users_ledger_is_their_own(app, make_user, lane_of):
    from webapp.lanes.execution import run_request

    alice, bob = make_user("alice"), make_user("bob")
    alice_deposit = lane_of(alice).submit("ledger.deposit", {"amount": 500})
    bob_withdraw = lane_of(bob).submit("ledger.withdraw", {"amount": 1})
    with app.app_context():
        run_request(alice_deposit, alice)
        run_request(bob_withdraw, bob)
    assert lane_of(bob).row(bob_withdraw).error_code == "insufficient_funds"


@pytest.mark.parametrize(
    ("type_name", "payload", "field"),
    [
        ("ledger.deposit", {"amount": 0}, "amount"),
        ("ledger.deposit", {"amount": 10**9 + 1}, "amount"),
        ("ledger.deposit", {"amount": 1.5}, "amount"),
        ("ledger.deposit", {}, "amount"),
        ("ledger.withdraw", {"amount": 1, "memo": "x" * 201}, "memo"),
        ("ledger.withdraw", {"amount": 1, "note": "hi"}, "note"),
        ("ledger.balance", {"amount": 1}, "amount"),
    ],
)
def test_bad_payloads_are_refused_naming_the_field(app, make_user, type_name, payload, field):
    from webapp.errors import InvalidPayload
    from webapp.lanes.service import submit_request

    user_id = make_user("alice")
    with app.app_context(), pytest.raises(InvalidPayload) as refused:
        submit_request(user_id, type_name, payload)
    assert refused.value.status == 422
    assert field in refused.value.details["fields"]
