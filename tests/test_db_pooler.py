"""Lanes through Debian's PgBouncer in transaction mode (``LANES_DB_POOLER=transaction``).

Between two transactions a client's server connection may serve another client. psycopg
prepares a statement after five runs of one query; through such a pooler the next client then
meets a statement it did not prepare (or cannot prepare its own). With the setting, lanes of
several users, more than the pooler has server connections, finish with exact ledgers.
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from bench.pgbouncer import PgBouncer, pgbouncer_installed
from tests.conftest import requests_of, wait_until
from webapp.config import Config

SERVER_CONNECTIONS = 2
USERS = 5
OPERATIONS = 12

pytestmark = [
    pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="needs PostgreSQL (TEST_DATABASE_URL)"),
    pytest.mark.skipif(not pgbouncer_installed() and not os.environ.get("CI"),
                       reason="Debian's pgbouncer is not installed (.ci/run installs it)"),
]


@pytest.fixture
def bouncer(database_url):
    pooler = PgBouncer(database_url, pool_size=SERVER_CONNECTIONS, max_client_conn=200).start()
    try:
        yield pooler
    finally:
        pooler.stop()


def engine_for(url: str, pooler: str):
    config = Config(SQLALCHEMY_DATABASE_URI=url, LANES_DB_POOLER=pooler, SECRET_KEY="unused")
    return create_engine(config.SQLALCHEMY_DATABASE_URI, **config.SQLALCHEMY_ENGINE_OPTIONS)


def run_each_query_seven_times(engine) -> None:
    """Two clients, one after the other, each running its own query past psycopg's prepare threshold."""
    with engine.connect() as first, engine.connect() as second:
        for client, query in ((first, "SELECT CAST(:value AS integer)"), (second, "SELECT CAST(:value AS text)")):
            for value in range(7):
                client.execute(text(query), {"value": value})
                client.commit()  # ends the transaction: the pooler takes the server connection back


def test_prepared_statements_break_through_the_pooler_unless_the_setting_turns_them_off(bouncer, database_url):
    through_pooler = bouncer.url_for(database_url)
    plain = engine_for(through_pooler, "")
    try:
        with pytest.raises(DBAPIError, match="prepared statement"):
            run_each_query_seven_times(plain)
    finally:
        plain.dispose()
    configured = engine_for(through_pooler, "transaction")
    try:
        run_each_query_seven_times(configured)
    finally:
        configured.dispose()


def test_lanes_through_the_pooler_finish_with_exact_ledgers(app, settings, make_user, bouncer, database_url,
                                                            start_worker):
    from webapp import create_app
    from webapp.extensions import db
    from webapp.lanes.service import submit_request

    through_pooler = bouncer.url_for(database_url)
    web = create_app({**settings, "SQLALCHEMY_DATABASE_URI": through_pooler, "LANES_DB_POOLER": "transaction"})
    users = [make_user(f"pooled{n}") for n in range(USERS)]
    rng = random.Random(10)
    expected: dict[int, list] = {}
    submitted: dict[int, list[int]] = {}
    with web.app_context():
        for user in users:
            balance, outcomes, ids = 0, [], []
            for number in range(OPERATIONS):
                kind = "ledger.deposit" if number == 0 or rng.random() < 0.6 else "ledger.withdraw"
                amount = rng.randint(1, 100)
                if kind == "ledger.withdraw" and amount > balance:
                    outcomes.append(("failed", "insufficient_funds", None))
                else:
                    balance += amount if kind == "ledger.deposit" else -amount
                    outcomes.append(("finished", None, balance))
                ids.append(submit_request(user, kind, {"amount": amount}).request.id)
            expected[user], submitted[user] = outcomes, ids
        db.session.remove()
        db.engine.dispose()

    # Watch PgBouncer while the lanes run: how many clients at once, on how many server connections.
    peaks = {"clients": 0, "servers": 0}
    watching = threading.Event()

    def watch():
        while not watching.is_set():
            pools = [pool for pool in bouncer.show("POOLS") if pool["database"] != "pgbouncer"]
            peaks["clients"] = max(peaks["clients"], sum(p["cl_active"] + p["cl_waiting"] for p in pools))
            peaks["servers"] = max(peaks["servers"], sum(p["sv_active"] + p["sv_idle"] + p["sv_used"]
                                                         + p["sv_tested"] + p["sv_login"] for p in pools))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    workers = [start_worker(DATABASE_URL=through_pooler, LANES_DB_POOLER="transaction") for _ in range(2)]

    def rows():
        found = requests_of(web, users)
        return found if all(row.status in ("finished", "failed", "canceled") for row in found) else None

    ended = wait_until(rows, timeout=90, interval=0.25, message="every pooled request to end")
    watching.set()
    watcher.join(5)
    with web.app_context():
        db.engine.dispose()

    for user in users:
        mine = [row for row in ended if row.user_id == user]
        assert [row.id for row in mine] == submitted[user]
        outcomes = [(row.status, row.error_code, row.result["balance"] if row.result else None) for row in mine]
        assert outcomes == expected[user], f"user {user}: the ledger is not what a sequential replay gives"
        assert all(row.attempts == 1 for row in mine), "a lane worker died and a request ran again"
    # More clients at once than server connections: the pooler really multiplexed them.
    assert peaks["servers"] <= SERVER_CONNECTIONS
    assert peaks["clients"] > SERVER_CONNECTIONS, peaks
    for worker in workers:
        log = worker.output()
        assert "prepared statement" not in log and "Traceback" not in log, log[-3000:]
