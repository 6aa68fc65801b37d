"""Bench-only: count the database statements and Redis commands each process sends.

The bench puts this directory first on ``PYTHONPATH`` of the web and worker processes it starts,
with ``LANES_COUNT_STATEMENTS=DIR``; Lanes itself never imports it, so counting costs nothing
outside the bench. Every process (a forked lane worker too) keeps its own counters and writes
them to ``DIR/<pid>.counts`` on every count into a shared memory map of that file (a
store, not a system call): lane workers leave through ``os._exit``, which runs no exit handler,
and the bench reads the files while processes still run.

Counted on the client side (this process only, whoever else shares the Redis server):
- ``statements``: SQL statements executed through SQLAlchemy (``before_cursor_execute``);
- ``transactions``: commits and rollbacks that end an open transaction (each is a round trip, and
  psycopg also sent a BEGIN). A connection in autocommit mode, or one returned to the pool with
  nothing begun, makes SQLAlchemy fire its commit or rollback event though psycopg sends nothing:
  those are not counted;
- ``redis_commands``: commands sent by redis-py, pipelined ones one by one, MULTI/EXEC included;
- ``redis_round_trips``: writes to the socket (a pipeline is one).
"""

from __future__ import annotations

import mmap
import os
import struct
import threading

FIELDS = ("statements", "transactions", "redis_commands", "redis_round_trips")
RECORD = struct.Struct("<4q")


class Counts:
    """This process's counters, kept in a shared memory map of its file: counting is a store, not a syscall."""

    def __init__(self, directory: str):
        self.directory = directory
        self.values = [0, 0, 0, 0]
        self.map: mmap.mmap | None = None
        self.lock = threading.Lock()  # the web process counts from many threads
        self.open()

    def open(self) -> None:
        path = os.path.join(self.directory, f"{os.getpid()}.counts")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, RECORD.size)
            self.map = mmap.mmap(fd, RECORD.size)  # MAP_SHARED: readers of the file see every store
        finally:
            os.close(fd)

    def after_fork(self) -> None:
        """A forked child counts from zero in a file of its own (the parent's file stays the parent's)."""
        self.values = [0, 0, 0, 0]
        self.lock = threading.Lock()  # another thread may have held it at the fork
        self.open()

    def add(self, index: int, amount: int = 1) -> None:
        with self.lock:
            self.values[index] += amount
            RECORD.pack_into(self.map, 0, *self.values)


def _in_transaction(connection) -> bool:
    """Whether the DBAPI connection has a transaction open, so that ending it is a round trip.

    psycopg sends nothing for a commit or rollback when the connection is idle (autocommit mode,
    or nothing begun); other drivers are counted as they are told to end one."""
    try:
        status = connection.connection.driver_connection.info.transaction_status
    except AttributeError:
        return True
    from psycopg.pq import TransactionStatus

    return status != TransactionStatus.IDLE


def install(directory: str) -> None:
    from redis.connection import AbstractConnection
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    counts = Counts(directory)
    os.register_at_fork(after_in_child=counts.after_fork)

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(*_args, **_kwargs):
        counts.add(0)

    @event.listens_for(Engine, "commit")
    def _commit(connection):
        if _in_transaction(connection):
            counts.add(1)

    @event.listens_for(Engine, "rollback")
    def _rollback(connection):
        if _in_transaction(connection):
            counts.add(1)

    send_command = AbstractConnection.send_command
    pack_commands = AbstractConnection.pack_commands
    send_packed_command = AbstractConnection.send_packed_command

    def counted_send_command(self, *args, **kwargs):
        counts.add(2)
        return send_command(self, *args, **kwargs)

    def counted_pack_commands(self, commands):
        commands = list(commands)
        counts.add(2, len(commands))
        return pack_commands(self, commands)

    def counted_send_packed_command(self, command, check_health=True):
        counts.add(3)
        return send_packed_command(self, command, check_health)

    AbstractConnection.send_command = counted_send_command
    AbstractConnection.pack_commands = counted_pack_commands
    AbstractConnection.send_packed_command = counted_send_packed_command


def read(directory: str) -> dict[str, int]:
    """The sums over every process that wrote to ``directory`` (those that exited included)."""
    totals = dict.fromkeys(FIELDS, 0)
    for name in os.listdir(directory):
        if name.endswith(".counts"):
            with open(os.path.join(directory, name), "rb") as record:
                data = record.read(RECORD.size)
            if len(data) == RECORD.size:
                for field, number in zip(FIELDS, RECORD.unpack(data), strict=True):
                    totals[field] += number
    return totals


if os.environ.get("LANES_COUNT_STATEMENTS"):
    install(os.environ["LANES_COUNT_STATEMENTS"])
