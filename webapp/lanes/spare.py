"""A spare lane worker: forked and connected ahead of time, waiting on a pipe to be given a lane.

A cold lane's first request waits for its lane worker to start. Forking a large process, opening
a database connection (a PostgreSQL backend is a process of its own) and a Redis connection cost
tens of milliseconds, more on a loaded machine. So each supervisor keeps one spare: a forked child
that has done all that and blocks reading its pipe. When a lane is admitted, the supervisor takes
the lane's lease and a slot as before and writes ``<user> <slot> <lease token>`` to the pipe; the
spare then serves the lane exactly as a freshly forked lane worker would (``serve_lane``: database
fence, RQ registration, claims), and the supervisor forks the next spare.

A spare holds no lease, no fence, no slot and no RQ registration, and runs nothing: it is not a
lane worker until it is handed a lane, and the supervisor does not count it as one. It stops on
SIGTERM, when the supervisor dies (PDEATHSIG, and its pipe's end of file), and when killed it is
simply replaced.
"""

from __future__ import annotations

import logging
import os

import redis
import setproctitle
from sqlalchemy.exc import SQLAlchemyError

from webapp.extensions import db
from webapp.lanes import rq_adapter
from webapp.lanes.execution import compile_ahead
from webapp.lanes.fence import LaneFence
from webapp.lanes.lane_worker import StopRequest, StopWaiting, serve_lane
from webapp.lanes.lease import LaneLease

log = logging.getLogger(__name__)

TITLE = "lanes spare"
MESSAGE_LIMIT = 512  # one handover line; far below PIPE_BUF, so it is written and read whole


def handover_line(user_id: int, slot: int, token: str) -> bytes:
    return f"{user_id} {slot} {token}\n".encode()


def read_handover(fd: int) -> tuple[int, int, str] | None:
    """Block for the supervisor's handover: (user, slot, lease token); None at end of file."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, MESSAGE_LIMIT)
        if not chunk:
            return None  # the supervisor closed its end (it stopped, or died)
        data += chunk
    user, slot, token = data.decode().split(" ", 2)
    return int(user), int(slot), token.rstrip("\n")


def warm_up(app) -> None:
    """Open this process's own database and Redis connections now, not on the lane's time.

    The forked child starts with empty pools (the supervisor's connections stay the supervisor's).
    A new PostgreSQL backend also plans its first statements slowly (its catalog caches are cold),
    so the hot statements run once, changing nothing. The connection is then checked in: it idles
    in the pool, in no transaction; if it went stale meanwhile (a database restart), the lane
    worker's first statement fails, the pool is renewed and the statement is tried again. A failure
    here is not fatal: the lane worker connects when it needs to, as a freshly forked one does.
    """
    with app.app_context():
        try:
            rq_adapter.learn_address(app.extensions["lanes_redis"])  # a round trip: connected
        except redis.exceptions.RedisError:
            log.warning("spare lane worker: Redis unavailable while warming up")
    run_hot_statements(app, "spare lane worker: database unavailable while warming up")


def run_hot_statements(app, unavailable: str) -> None:
    """Run a lane worker's start-up and per-job statements once where they change nothing.

    In the supervisor this compiles them (a forked child inherits SQLAlchemy's cache); in a spare it
    also warms its own database connection. A database that is away is only logged (``unavailable``):
    the statements are then compiled where they are first needed.
    """
    with app.app_context():
        try:
            compile_ahead()
            fence = LaneFence(db.engine, 0, "", app.config["LANES_LEASE_SECONDS"])
            fence.renew()  # holds nothing: changes nothing
            fence.release()
        except SQLAlchemyError:
            log.warning(unavailable)
        finally:
            db.session.remove()


def serve_when_handed(app, fd: int, board, stop: StopRequest) -> int:
    """The spare's life: warm up, wait for a lane on ``fd``, then serve it. Returns the exit status.

    Runs in the child that ``Supervisor.keep_spare`` forked, with SIGINT ignored, PDEATHSIG set and
    ``stop`` handling SIGTERM: a waiting spare has nothing to finish, so a SIGTERM ends its wait at
    once. A lane handed to it meanwhile is still taken and let go at once (``serve_lane`` sees the
    stop), so its lease is released, not left to expire.
    """
    setproctitle.setproctitle(TITLE)
    warm_up(app)
    handed = None
    stop.interruptible = True
    try:
        if not stop.requested.is_set():
            handed = read_handover(fd)
    except StopWaiting:
        pass
    finally:
        stop.interruptible = False
    if handed is None and stop.requested.is_set():
        handed = _handed_already(fd)
    os.close(fd)
    if handed is None:
        return 0
    user_id, slot, token = handed
    lease = LaneLease(app.extensions["lanes_redis"], user_id, token, app.config["LANES_LEASE_SECONDS"])
    return serve_lane(app, user_id, lease, board.view(slot), stop)


def _handed_already(fd: int) -> tuple[int, int, str] | None:
    """A handover already in the pipe as the spare was told to stop (one write: whole, or absent)."""
    os.set_blocking(fd, False)
    try:
        return read_handover(fd)
    except BlockingIOError:
        return None


class Spare:
    """The supervisor's handle on its spare: the child's pid and the write end of its pipe."""

    def __init__(self, pid: int, fd: int):
        self.pid = pid
        self.fd = fd

    def hand(self, user_id: int, slot: int, token: str) -> bool:
        """Give the spare a lane; False when it is gone (then the caller forks a lane worker instead)."""
        try:
            written = os.write(self.fd, handover_line(user_id, slot, token))
        except (BrokenPipeError, OSError):
            return False
        finally:
            self.close()
        return written > 0

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1

