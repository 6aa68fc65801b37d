"""``make soak`` (``python -m bench.soak``): mixed traffic through a real Lanes under random faults.

It starts its own PostgreSQL cluster and its own redis-server (append-only, as production runs
it) in a temporary directory, a gunicorn web process and two or more ``worker.py`` supervisors,
drives N users through the JSON API (an Idempotency-Key on every submit, retried on 503 and
connection errors), kills and breaks those processes and servers at random (seeded), and then
checks from the database that no acknowledged request was lost, duplicated, run concurrently
or out of order, that every ledger is exact and that no answer was a 500. It measures how long
each fault took to recover from, prints a table, and exits non-zero on any violation. With
``--sentinel`` Redis is a primary, a replica and three sentinels, and a failover is one of the faults.
"""
