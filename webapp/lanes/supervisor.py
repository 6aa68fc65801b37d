"""The supervisor: admits ready lanes, forks one lane worker per lane, reaps and recovers.

Any number of supervisors may run, on any number of hosts. A lane's lease in Redis makes sure
at most one of them serves it. Lane workers are forked from this already-imported process
(a few milliseconds instead of a fresh interpreter's hundreds) into their own process group,
so that a Ctrl-C in the terminal reaches only the supervisor, which then stops them warmly.
One of them is forked ahead as a spare (``spare``): already connected, it is handed the next
admitted lane through a pipe, and another spare is forked after it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass

import redis
from sqlalchemy.exc import SQLAlchemyError

from jobs.registry import all_job_types
from webapp import system_log
from webapp.extensions import db
from webapp.lanes import keys, ready_index
from webapp.lanes.cleanup import delete_expired_exports, sweep
from webapp.lanes.fence import LaneFence
from webapp.lanes.lane_worker import StopRequest, forget_dead_worker, serve_lane
from webapp.lanes.lease import LaneLease
from webapp.lanes.reconciler import reconcile, repair_lane
from webapp.lanes.slot_board import SlotBoard
from webapp.lanes.spare import Spare, run_hot_statements, serve_when_handed
from webapp.lanes.worker_metrics import (
    LANE_WORKERS,
    LANES_DELETED,
    READY_LANES,
    REPAIRS,
    WAITING_LANES,
    WORKER_EXITS,
    WORKER_STARTS,
    process_exited,
    serve,
    start_series,
)

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# After Redis failed, ask again soon (a Sentinel failover answers within about 2 s), then once a second.
REDIS_RETRY_SECONDS = (0.1, 0.2, 0.4, 0.8, 1.0)
EXPORT_SWEEP_SECONDS = 3600  # expired exports are refused at once; deleting them can wait an hour


def stop_when_parent_dies(parent_pid: int) -> None:
    """Have the kernel send this process SIGTERM (RQ's warm shutdown) when its supervisor dies.

    A supervisor killed with SIGKILL cannot stop its lane workers; without this they would keep
    serving, unsupervised, until idle. Linux only; elsewhere they still stop at their idle timeout.
    """
    libc_name = ctypes.util.find_library("c")
    prctl = getattr(ctypes.CDLL(libc_name, use_errno=True), "prctl", None) if libc_name else None
    if prctl is None or prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return
    if os.getppid() != parent_pid:  # it died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Child:
    user_id: int
    lease: LaneLease
    started: float
    slot: int
    stopping_since: float | None = None


class Supervisor:
    """Runs lane workers for ready lanes, up to ``LANES_MAX_WORKERS`` at once."""

    TICK_SECONDS = 0.25
    STOPPING_TICK_SECONDS = 0.05  # while a lane worker makes room, look for its exit this often
    SPARE_RETRY_SECONDS = 1.0  # after a spare died unused, wait this long before forking the next

    def __init__(self, app):
        self.app = app
        self.config = app.config
        self.connection: redis.Redis = app.extensions["lanes_redis"]
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.children: dict[int, Child] = {}
        self.board = SlotBoard(self.config["LANES_MAX_WORKERS"])
        self.crowded = False  # every slot taken and lanes waiting (then reap and admit on a short tick)
        self.stopping = False
        self.next_reconcile = 0.0
        self.next_export_sweep = 0.0  # this supervisor's first housekeeping with the lock sweeps them
        self.spare: Spare | None = None  # a forked, connected child waiting to be handed a lane
        self.next_spare = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        self._start_metrics()
        self._compile_ahead()
        # What is loaded by now (the app, its SQL compiled) stays out of the garbage collector, as
        # Python's gc docs advise before forking: a child's collections then do not write to, and so
        # copy, the memory pages it shares with the supervisor.
        gc.freeze()
        log.info("supervisor %s: serving up to %d lanes", self.id, self.config["LANES_MAX_WORKERS"])
        failures = 0  # ticks in a row that found Redis away
        while not self.stopping:
            try:
                self.tick()
                failures = 0
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                log.warning("supervisor: Redis unavailable, retrying", exc_info=failures == 0)
                time.sleep(REDIS_RETRY_SECONDS[min(failures, len(REDIS_RETRY_SECONDS) - 1)])
                failures += 1
            except Exception:  # noqa: BLE001 - the supervisor must outlive one bad tick
                log.exception("supervisor: tick failed")
                time.sleep(1)
        self.shutdown()

    def _request_stop(self, signum, _frame) -> None:
        if not self.stopping:
            log.info("supervisor: %s received, stopping lane workers", signal.Signals(signum).name)
        self.stopping = True

    def shutdown(self) -> None:
        """Ask every lane worker to finish its job and stop; kill those past the deadline."""
        deadline = time.monotonic() + self.config["LANES_SHUTDOWN_SECONDS"]
        if self.spare is not None:
            self._signal(self.spare.pid, signal.SIGTERM)
        for pid in list(self.children):
            self._signal(pid, signal.SIGTERM)
        while (self.children or self.spare) and time.monotonic() < deadline:
            if not self.reap(block_seconds=0.1):
                time.sleep(0.05)
        for pid in [*self.children, *([self.spare.pid] if self.spare else [])]:
            log.warning("supervisor: lane worker %s did not stop in time; killing it", pid)
            self._signal(pid, signal.SIGKILL)
        while self.children or self.spare:
            self.reap(block_seconds=0.1)
        self.connection.zrem(keys.SUPERVISORS, self.id)

    def _compile_ahead(self) -> None:
        run_hot_statements(self.app, "supervisor: database unavailable; lane workers will compile their statements")

    def _start_metrics(self) -> None:
        start_series([job_type.name for job_type in all_job_types()])
        port = self.config["LANES_WORKER_METRICS_PORT"]
        if port:
            serve(port, os.environ.get("LANES_WORKER_METRICS_HOST", "127.0.0.1"))

    # -- one round ---------------------------------------------------------------------------

    def tick(self) -> None:
        self.reap()
        self.admit()
        self.make_room()
        self.keep_spare()
        now = time.monotonic()
        if now >= self.next_reconcile:
            self.next_reconcile = now + self.config["LANES_RECONCILE_SECONDS"]
            self.housekeeping()
        # Sleep until a submit nudges us (or a tick passes, to reap and retry).
        making_room = self.crowded or any(child.stopping_since is not None for child in self.children.values())
        tick = self.STOPPING_TICK_SECONDS if making_room else self.TICK_SECONDS
        ready_index.sleep_until_nudged(self.connection, tick)

    def make_room(self) -> None:
        """Every slot taken and lanes waiting: say so on the board (a lane worker whose lane empties then
        leaves at once), and stop the lane workers that are idle already (their lanes are empty)."""
        self.crowded = False
        if len(self.children) >= self.config["LANES_MAX_WORKERS"]:
            waiting = ready_index.waiting(self.connection, grace=0, limit=len(self.children))
            self.crowded = bool(waiting)
        self.board.set_crowded(self.crowded)
        if not self.crowded:
            return
        idle = [pid for pid, child in self.children.items()
                if child.stopping_since is None and self.board.is_idle(child.slot)]
        for pid in idle[:len(waiting)]:
            log.info("supervisor: lane %s is idle while lanes wait; stopping its worker", self.children[pid].user_id)
            self.children[pid].stopping_since = time.monotonic()
            self._signal(pid, signal.SIGTERM)

    def admit(self) -> None:
        """Take the lease of ready lanes, oldest-waiting first, while there is capacity."""
        capacity = self.config["LANES_MAX_WORKERS"] - len(self.children)
        ready = ready_index.in_order(self.connection)
        READY_LANES.set(len(ready))
        running = {child.user_id for child in self.children.values()}
        for user_id in ready:
            if capacity <= 0:
                break
            if user_id in running:
                continue
            lease = LaneLease(self.connection, user_id, f"{self.id}:{uuid.uuid4().hex[:8]}",
                              self.config["LANES_LEASE_SECONDS"])
            if lease.acquire():
                self.spawn(user_id, lease)
                capacity -= 1

    def spawn(self, user_id: int, lease: LaneLease) -> None:
        """Start the lane's worker: the spare if there is one (it is connected already), else a fork."""
        slot = self.board.take_slot()
        pid = None
        if self.spare is not None:
            spare, self.spare = self.spare, None
            if spare.hand(user_id, slot, lease.token):
                pid = spare.pid
            # else it died and is not reaped yet: fork a lane worker instead
        if pid is None:
            pid = self.fork(lambda stop: serve_lane(self.app, user_id, lease, self.board.view(slot), stop),
                            f"lane worker for lane {user_id}")
        self.children[pid] = Child(user_id, lease, time.monotonic(), slot)
        WORKER_STARTS.inc()
        LANE_WORKERS.set(len(self.children))
        log.info("supervisor: lane %s -> worker pid %d", user_id, pid)

    def keep_spare(self) -> None:
        """Have a spare ready for the next cold lane (not while stopping, nor right after one died)."""
        if self.spare is not None or self.stopping or self.config["LANES_MAX_WORKERS"] < 1:
            return
        if time.monotonic() < self.next_spare:
            return
        read_end, write_end = os.pipe()
        try:
            pid = self.fork(lambda stop: serve_when_handed(self.app, read_end, self.board, stop), "spare lane worker",
                            close_fds=(write_end,))
        finally:
            os.close(read_end)
        self.spare = Spare(pid, write_end)

    def fork(self, body, what: str, close_fds: tuple[int, ...] = ()) -> int:
        """Fork a child that runs ``body(stop)`` and exits with its status; the child's pid.

        The child gets a process group of its own (a Ctrl-C reaches only the supervisor), Lanes'
        SIGTERM handler before anything else (``stop``: a request to stop, at any moment of its
        life), SIGTERM when the supervisor dies, and empty connection pools.
        """
        parent_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                for fd in (*close_fds, *([self.spare.fd] if self.spare else [])):
                    os.close(fd)  # a spare's pipe is the supervisor's to write: its end of file says it stopped
                os.setpgid(0, 0)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                stop = StopRequest()
                signal.signal(signal.SIGTERM, stop)
                stop_when_parent_dies(parent_pid)
                with self.app.app_context():
                    db.engine.dispose(close=False)  # the parent's connections stay the parent's
                status = body(stop)
            except BaseException:  # noqa: BLE001 - report anything, then leave without cleanup handlers
                log.exception("%s crashed", what)
            finally:
                system_log.flush_all(timeout=2.0)  # os._exit skips atexit: write this worker's events first
                os._exit(status)
        return pid

    def reap(self, block_seconds: float = 0.0) -> bool:
        """Collect exited lane workers; a crashed one gets its lane back in the ready index.

        A spare that died before it was given a lane is only replaced (after ``SPARE_RETRY_SECONDS``).
        """
        reaped = False
        deadline = time.monotonic() + block_seconds
        while self.children or self.spare is not None:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                self._spare_gone()
                break
            if pid == 0:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
                continue
            process_exited(pid)
            if self.spare is not None and pid == self.spare.pid:
                log.info("supervisor: spare lane worker %d exited unused (status %s)", pid, status)
                self._spare_gone()
                reaped = True
                continue
            child = self.children.pop(pid, None)
            if child is None:
                continue  # a spare that died as it was handed a lane (it was replaced by a fork)
            self.board.give_back(child.slot)
            reaped = True
            clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            WORKER_EXITS.labels("clean" if clean else "crashed").inc()
            if not clean:
                log.warning("supervisor: lane worker %d for lane %s died (status %s)", pid, child.user_id, status)
                system_log.record("worker.crashed", subject=keys.lane_name(child.user_id), app=self.app,
                                  details={"pid": pid, "status": status})
                self.recover_lane(child)
        LANE_WORKERS.set(len(self.children))
        return reaped

    def _spare_gone(self) -> None:
        if self.spare is not None:
            self.spare.close()
            self.spare = None
            self.next_spare = time.monotonic() + self.SPARE_RETRY_SECONDS

    def recover_lane(self, child: Child) -> None:
        """A lane worker died: let the next one take its lane at once, its interrupted request first.

        It is known dead (reaped), so its database fence is released here rather than left to lapse.
        """
        forget_dead_worker(child.lease)
        with self.app.app_context():
            try:
                LaneFence(db.engine, child.user_id, child.lease.token, self.config["LANES_LEASE_SECONDS"]).release()
            except SQLAlchemyError:
                log.warning("supervisor: could not release lane %s's fence; it lapses on its own", child.user_id)
            try:
                repair_lane(self.connection, child.user_id)  # the ids it had taken off the queue
            except SQLAlchemyError:
                log.warning("supervisor: could not repair lane %s; the reconciler will", child.user_id)
            finally:
                db.session.remove()
        child.lease.release()
        # An interrupted request may be left 'started' with an empty queue: keep the lane ready.
        ready_index.remark(self.connection, child.user_id)

    def housekeeping(self) -> None:
        """Heartbeat and gauges (every supervisor), then reconcile and sweep (one supervisor at a time)."""
        now = time.time()
        with self.connection.pipeline() as pipe:
            pipe.zadd(keys.SUPERVISORS, {self.id: now})
            pipe.zremrangebyscore(keys.SUPERVISORS, "-inf", now - 3 * self.config["LANES_RECONCILE_SECONDS"])
            pipe.execute()
        WAITING_LANES.set(len(ready_index.waiting(self.connection)))
        period_ms = int(self.config["LANES_RECONCILE_SECONDS"] * 1000)
        if not self.connection.set(keys.RECONCILE_LOCK, self.id, nx=True, px=max(period_ms - 100, 100)):
            return
        with self.app.app_context():
            REPAIRS.inc(reconcile(self.connection))
            db.session.remove()
            LANES_DELETED.inc(sweep(self.connection))  # in the app context: deletions go to the system log
            if now >= self.next_export_sweep:
                self.next_export_sweep = now + EXPORT_SWEEP_SECONDS
                self.sweep_exports()

    def sweep_exports(self) -> None:
        try:
            deleted = delete_expired_exports(self.config["LANES_EXPORT_TTL_DAYS"])
        except SQLAlchemyError:
            log.warning("supervisor: could not delete expired exports; will try again", exc_info=True)
            db.session.rollback()
            return
        finally:
            db.session.remove()
        if deleted:
            log.info("supervisor: deleted %d expired exports", deleted)

    def _signal(self, pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
