"""``make bench`` (``python -m bench``): measures Lanes against its speed targets on this machine.

It starts a Lanes of its own (gunicorn and ``worker.py``, on the database and Redis that
``DATABASE_URL`` and ``REDIS_URL`` name, else a temporary SQLite file and an embedded Redis),
drives it through the JSON API and Socket.IO like a script would, prints a table and writes
``bench/results/latest.json``. Everything it creates (users, rows, keys, processes) goes away.
"""
