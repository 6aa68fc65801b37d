"""The lane worker: serves exactly one lane, running its requests in its own process, in order.

It is registered with RQ as RQ's own worker record (``Worker.all()`` and rq-dashboard list it with
its pid and current job), but runs Lanes' lean loop instead of RQ's ``work()``: take the next id
off the lane's queue, claim the oldest pending row (the database decides), run it, record it, and
announce it, with RQ's bookkeeping riding in the pipelines that carry the events (``rq_adapter``).

It serves while it holds the lane's Redis lease and database fence, renewing both from a thread. It
hands the lane back after ``LANES_FAIR_SHARE`` jobs in a row when another lane waits for a worker,
leaves at once when its lane is empty and another lane waits, exits after ``LANES_IDLE_SECONDS``
without work, and rides out Redis and database outages: it waits for them to come back and re-runs
the request they interrupted.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time

import redis
import setproctitle
from rq import Queue
from sqlalchemy.exc import SQLAlchemyError

from webapp.extensions import db
from webapp.lanes import keys, ready_index, rq_adapter
from webapp.lanes.cleanup import delete_lane_if_gone
from webapp.lanes.execution import (
    NO_LIMIT,
    SETTLED,
    SETTLED_ONLY,
    Events,
    PlumbingFailure,
    announce_events,
    claim_next,
    has_pending,
    run_claimed,
)
from webapp.lanes.fence import LaneFence
from webapp.lanes.lease import LaneLease
from webapp.lanes.reconciler import repair_lane
from webapp.lanes.slot_board import NoBoard

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 0.5  # how often an idle lane worker looks up from its queue
FAIRNESS_CHECK_SECONDS = 1.0  # past its fair share, how often a busy one asks Redis whether others wait
RETRY_SECONDS = 0.5  # between attempts while Redis or the database is away
REDIS_AWAY = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
HAND_BACK_PATIENCE_SECONDS = 6.0  # a leaving worker retries handing its lane back this long (a failover)
HAND_BACK_RETRY_SECONDS = 0.5


def worker_name(lease: LaneLease) -> str:
    """The RQ worker name of the lane worker holding ``lease`` (unique per lease)."""
    return f"{socket.gethostname()}.{lease.token.rsplit(':', 1)[-1]}.lane{lease.user_id}"


class StopWaiting(Exception):
    """SIGTERM arrived while the lane worker waited with nothing to finish: leave now."""


class StopRequest:
    """What SIGTERM means to a lane worker: stop after the running job, at once while nothing runs.

    The supervisor installs it first thing in every child it forks, so a SIGTERM that arrives while
    a lane worker starts up (or a spare waits, or either is exiting) is a request to stop, never the
    default death that the supervisor would count as a crash.
    """

    def __init__(self):
        self.requested = threading.Event()
        self.interruptible = False  # waiting with nothing to finish: the wait ends at once

    def __call__(self, _signum, _frame) -> None:
        self.requested.set()
        if self.interruptible:
            raise StopWaiting()


class LaneWorker:
    """One lane's worker loop, holding the lane's lease and fence while it runs."""

    def __init__(self, app, user_id: int, lease: LaneLease, board=None, stop: StopRequest | None = None):
        config = app.config
        self.stop = stop or StopRequest()
        self.user_id = user_id
        self.lease = lease
        self.connection = lease.connection
        self.fence = LaneFence(db.engine, user_id, lease.token, config["LANES_LEASE_SECONDS"])
        self.fair_share = config["LANES_FAIR_SHARE"]
        self.idle_seconds = config["LANES_IDLE_SECONDS"]
        self.renew_every = config["LANES_LEASE_SECONDS"] / 3
        self.rq_worker = rq_adapter.LaneRQWorker(
            [Queue(keys.lane_name(user_id), connection=self.connection)],
            connection=self.connection, name=worker_name(lease),
        )
        self.rq_worker.procline = self.procline
        self.stop_requested = self.stop.requested  # SIGTERM: finish the running job, then go
        self.lane_lost = threading.Event()  # the lease or the fence went to another worker
        self.fenced = threading.Event()  # take_fence took the fence: from then on it can be lost
        self.handed_back = False
        self.retakes_seen = lease.retaken  # see redis_forgot_lane
        self.ask_database_until = self.next_database_look = 0.0
        self.jobs_in_a_row = 0
        self.shown_busy = False  # RQ's record says busy (set with each start, cleared once idle)
        self.board = board or NoBoard()  # the supervisor's slots: crowded? and this worker idle

    def procline(self, _message: str = "") -> None:
        # RQ rewrites the title on state changes; keep ours so ``ps`` names the lane.
        setproctitle.setproctitle(f"lanes {keys.lane_name(self.user_id)}")

    # -- the loop ------------------------------------------------------------------------------

    def serve(self) -> None:
        """Claim and run the lane's requests until idle, handed back, stopped or the lane is lost.

        One request's end is announced with the next one's start, in one round trip, when the next
        id was already taken off the queue (it was, at the start, with the start's bookkeeping);
        otherwise alone, with a look at the queue for what came meanwhile.
        """
        taken: str | None = None  # an id taken off the queue, for the next claim to account for
        claim = first_claim = True  # first thing: the database may hold work Redis lost (a crash, a flush)
        settled_only = False  # the next claim takes only rows whose submits have settled
        ended: Events = ()  # the last request's end, not yet announced
        idle_since = time.monotonic()
        next_fairness_check = 0.0
        try:
            while not self.stopping():
                if claim:
                    try:
                        # Up to the id taken: a younger row may not have been announced as queued yet.
                        up_to = int(taken) if taken else SETTLED_ONLY if settled_only else NO_LIMIT
                        settled_only = False
                        claimed = claim_next(self.user_id, self.fence.holder, up_to)
                    except SQLAlchemyError as problem:
                        ended = self.announce(ended)
                        self.recover("claiming a request", problem)
                        continue
                    if claimed is None:
                        if self.fence_lapsed():
                            continue  # re-taken: claim again (or the lane went to another worker: stop)
                        # The id taken named nothing pending (canceled, or a stray): look at the queue again.
                        ended, (taken, claim) = (), self.announce_and_take(ended)
                        continue
                    row, lane = claimed
                    if first_claim and row.attempts > 1:
                        # Taking over from a lost worker (another host?): the ids it took off the queue are gone.
                        self.repair()
                    first_claim = False
                    try:
                        ended, started = run_claimed(row, lane, self.start_bookkeeping(row.id, taken), earlier=ended)
                    except PlumbingFailure:
                        log.warning("lane %s: request %s interrupted by the plumbing; it will be re-run",
                                    self.user_id, row.id, exc_info=True)
                        ended = ()  # they went out with the interrupted start
                        self.recover("running a request")
                        taken, claim = None, True
                        continue
                    if started is None:  # Redis failed at the start: ask the database instead of the queue
                        taken, claim = None, True
                    elif not started:  # a row given up as worker_lost took nothing: ``taken`` is claimed next
                        claim = True
                    elif (taken := started[-1].decode() if started[-1] else None) is None:
                        # Nothing was queued behind it: announce its end now, and look again.
                        ended, (taken, claim) = (), self.announce_and_take(ended)
                    else:
                        claim = True
                    idle_since = time.monotonic()
                    self.shown_busy = True
                    self.jobs_in_a_row += 1
                    if self.jobs_in_a_row >= self.fair_share and (
                        self.board.crowded() or time.monotonic() >= next_fairness_check
                    ):
                        # This supervisor's board says so for free; Redis says so for lanes no supervisor took.
                        next_fairness_check = time.monotonic() + FAIRNESS_CHECK_SECONDS
                        if self.others_waiting():
                            log.info("lane %s: %d jobs in a row while others wait; handing it back",
                                     self.user_id, self.jobs_in_a_row)
                            self.handed_back = True
                            break
                    continue
                # Nothing to claim: wait for the queue, unless other lanes wait for this slot.
                self.jobs_in_a_row = 0
                if self.redis_forgot_lane():
                    # Ask the database: the ids Redis held are gone. Only rows whose submits have
                    # settled: a younger one's id (and its request.queued) may be on its way.
                    taken, claim, settled_only = None, True, True
                    continue
                if time.monotonic() - idle_since >= self.idle_seconds:
                    break
                if self.board.crowded():
                    log.info("lane %s: empty while other lanes wait for a slot; making room", self.user_id)
                    break
                try:
                    if self.shown_busy and time.monotonic() - idle_since >= IDLE_POLL_SECONDS:
                        self.rq_worker.mark_idle()
                        self.shown_busy = False
                    wait = min(IDLE_POLL_SECONDS, max(0.05, self.idle_seconds - (time.monotonic() - idle_since)))
                    taken = self.wait_for_queue(wait)
                except StopWaiting:
                    self.connection.connection_pool.disconnect()  # a read was cut short: drop its connection
                    break
                except redis.exceptions.RedisError:
                    self.recover("waiting for the queue")
                    claim = True
                    continue
                claim = taken is not None
        finally:
            self.announce(ended)
        if taken is not None:
            self.put_back(taken)

    def redis_forgot_lane(self) -> bool:
        """Whether the database should be asked for this lane's work because Redis forgot the lane.

        The lease renewal takes the lease again when Redis lost it (a flush, a restart without
        persistence); the lane's queued ids went with it, and nobody may push them again (a user who
        waits for their requests submits nothing new). From then, and for as long as a submit of just
        before may still be committing (``SETTLED``), each look at an empty queue is also a claim.
        """
        if self.lease.retaken != self.retakes_seen:
            self.retakes_seen = self.lease.retaken
            self.ask_database_until = time.monotonic() + SETTLED.total_seconds() + IDLE_POLL_SECONDS
        if time.monotonic() >= self.ask_database_until or time.monotonic() < self.next_database_look:
            return False
        self.next_database_look = time.monotonic() + IDLE_POLL_SECONDS
        return True

    def fence_lapsed(self) -> bool:
        """After a claim found nothing: whether that was because the fence had lapsed (the database was
        away past its expiry) rather than because nothing was pending. A lapsed fence is taken again
        if it is free; if another worker holds it, the lane is lost. Claiming without the fence finds
        nothing, and the id taken off the queue must not be dropped for that."""
        try:
            if self.fence.renew():
                return False
            if not self.fence.acquire():
                log.warning("lane %s: fence taken by another worker; stopping", self.user_id)
                self.lane_lost.set()
        except SQLAlchemyError as problem:
            self.recover("checking the fence", problem)
        return True

    def start_bookkeeping(self, request_id: int, taken: str | None):
        """RQ's bookkeeping of a start, and a look at the queue for the id after it (same pipeline)."""
        def bookkeeping(pipe) -> None:
            rq_adapter.mark_started(pipe, self.user_id, self.rq_worker.key, request_id, taken)
            rq_adapter.take_next(pipe, self.user_id)
        return bookkeeping

    def announce(self, events: Events) -> Events:
        """Publish events held back for the next start (there will be none); returns what is left: ()."""
        if events:
            announce_events(self.user_id, events)
        return ()

    def announce_and_take(self, events: Events) -> tuple[str | None, bool]:
        """Publish ``events`` and take the lane's next id, in one round trip: (the id, claim next?).

        When Redis did not answer, the database is asked instead, after a pause (Redis may be down).
        """
        results = announce_events(self.user_id, events, lambda pipe: rq_adapter.take_next(pipe, self.user_id))
        if results is None:
            self.stop_requested.wait(RETRY_SECONDS)
            return None, True
        taken = results[-1].decode() if results[-1] else None
        return taken, taken is not None

    def wait_for_queue(self, seconds: float) -> str | None:
        """Block for the lane's next id, flagged idle meanwhile (SIGTERM then ends the wait at once)."""
        self.stop.interruptible = True
        self.board.idle(True)
        try:
            if self.stop_requested.is_set():
                raise StopWaiting()
            return rq_adapter.wait_next(self.connection, self.user_id, seconds)
        finally:
            self.stop.interruptible = False
            self.board.idle(False)

    def stopping(self) -> bool:
        return self.stop_requested.is_set() or self.lane_lost.is_set()

    def others_waiting(self) -> bool:
        """Whether another lane has waited for a worker past the grace (so no slot is free for it)."""
        return bool(ready_index.waiting(self.connection, besides=self.user_id, limit=1))

    def recover(self, doing: str, problem: Exception | None = None) -> None:
        """After Redis or the database failed: roll the session back and pause before trying again.

        No pause when the database had only dropped the pooled connection (it restarted): SQLAlchemy
        has renewed the pool, and the next try connects afresh (worker.py does not ping connections).
        """
        log.warning("lane %s: plumbing failed while %s; retrying", self.user_id, doing, exc_info=True)
        try:
            db.session.rollback()
        except SQLAlchemyError:
            db.session.close()
        if not getattr(problem, "connection_invalidated", False):
            self.stop_requested.wait(RETRY_SECONDS)

    def repair(self) -> None:
        try:
            repair_lane(self.connection, self.user_id)
        except (redis.exceptions.RedisError, SQLAlchemyError):
            log.warning("lane %s: repair failed; the reconciler will re-add what is missing", self.user_id)
            db.session.rollback()

    def put_back(self, taken: str) -> None:
        try:
            rq_adapter.put_back(self.connection, self.user_id, taken)
        except redis.exceptions.RedisError:
            pass  # the reconciler re-enqueues its row from the database

    # -- holding the lane ----------------------------------------------------------------------

    def take_fence(self) -> bool:
        """Take the lane's database fence, waiting while a previous worker still holds it.

        A previous worker whose Redis lease was lost (a flush) stops after its running job and
        releases the fence; until then this one waits, and claims nothing.
        """
        while not self.stopping():
            try:
                if self.fence.acquire():
                    self.fenced.set()
                    return True
            except SQLAlchemyError:
                log.warning("lane %s: database unavailable while taking the fence", self.user_id)
            self.stop_requested.wait(RETRY_SECONDS)
        return False

    def keep_fence(self, stop: threading.Event) -> None:
        """Renew the database fence until the loop has ended (``stop``), whatever Redis does meanwhile.

        It is renewed even after the Redis lease was lost: the running job must finish under the fence,
        or a new worker could take the lane and re-run the job beside it. Only a fence that lapsed and
        went to another worker (this one frozen or cut off past ``LANES_LEASE_SECONDS``) stops it.
        Until ``take_fence`` has it there is nothing to renew: the previous holder's fence is not this
        worker's lost fence (calling it that would stop a worker that is meant to wait for it).
        """
        while not stop.wait(self.renew_every):
            if not self.fenced.is_set():
                continue
            try:
                if not self.fence.renew() and not self.fence.acquire():
                    log.warning("lane %s: fence taken by another worker; stopping", self.user_id)
                    self.lane_lost.set()
                    return
            except SQLAlchemyError:
                log.warning("lane %s: fence renewal failed (database unavailable)", self.user_id)

    def keep_lease(self, stop: threading.Event) -> None:
        """Renew the Redis lease and RQ's heartbeat until ``stop``; once another holds the lease, stop
        after the running job (a thread of its own: a frozen Redis must not delay the fence)."""
        while not stop.wait(self.renew_every):
            try:
                if not self.lease.renew():
                    log.warning("lane %s: lease taken by another worker; stopping after this job", self.user_id)
                    self.lane_lost.set()
                    return
                with self.connection.pipeline(transaction=False) as pipe:
                    self.rq_worker.heartbeat_in(pipe)
                    pipe.execute()
            except redis.exceptions.RedisError:
                log.warning("lane %s: lease renewal failed (Redis unavailable)", self.user_id)


def serve_lane(app, user_id: int, lease: LaneLease, board=None, stop: StopRequest | None = None) -> int:
    """Serve one lane until it is idle, handed back, or stopped. Returns the exit status.

    ``board`` is this worker's view of its supervisor's slots (``slot_board``); ``stop`` is the
    SIGTERM handler the supervisor installed as it forked this process (a SIGTERM that came before
    counts: the lane is let go at once). Without one, one is installed for the while.
    """
    setproctitle.setproctitle(f"lanes {keys.lane_name(user_id)}")
    stop_request = stop or StopRequest()
    previous = signal.signal(signal.SIGTERM, stop_request)
    try:
        return _serve_lane(app, user_id, lease, board, stop_request)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve_lane(app, user_id: int, lease: LaneLease, board, stop_request: StopRequest) -> int:
    with app.app_context():
        try:
            worker = LaneWorker(app, user_id, lease, board, stop_request)  # RQ's worker may ask Redis things
        except REDIS_AWAY:
            log.warning("lane %s: Redis unavailable as its worker started; handing the lane back", user_id)
            _let_go(lease, user_id, stop_request)
            return 0
        stop = threading.Event()
        holders = [threading.Thread(target=keep, args=(stop,), daemon=True)
                   for keep in (worker.keep_fence, worker.keep_lease)]
        for holder in holders:
            holder.start()
        registered = fenced = False
        try:
            fenced = worker.take_fence()
            if fenced:
                worker.rq_worker.register_birth()
                registered = True
                worker.serve()
        except REDIS_AWAY:
            # A blip before the loop (which rides out its own): the lane goes back to the ready index.
            log.warning("lane %s: Redis unavailable as its worker started; handing the lane back", user_id)
        finally:
            stop.set()
            for holder in holders:  # before letting go: a renewal after the release would take the lease again
                holder.join()
            if registered:
                _quietly(worker.rq_worker.register_death)
            if fenced:
                _quietly(worker.fence.release)
            _let_go(lease, user_id, stop_request)
            db.session.remove()
    return 0


def _let_go(lease: LaneLease, user_id: int, stop_request: StopRequest) -> None:
    """Give the lease back, and keep the lane ready when the database still holds its work.

    While Redis is away (a Sentinel failover takes a couple of seconds), the hand-back is tried again
    for up to ``HAND_BACK_PATIENCE_SECONDS``: a lane handed back into nowhere, its ids lost with the
    old primary, would wait for the reconciler.
    """
    deadline = time.monotonic() + HAND_BACK_PATIENCE_SECONDS
    while (still_has_work := _quietly(lease.release)) is None and time.monotonic() < deadline:
        if stop_request.requested.wait(HAND_BACK_RETRY_SECONDS):
            break
    if still_has_work is False and _quietly(lambda: has_pending(user_id)):
        # Redis lost the lane's ids (a flush, a restart, a failover) but its rows wait: a worker, now.
        _quietly(lambda: ready_index.remark(lease.connection, user_id))
    elif still_has_work is False:
        _quietly(lambda: delete_lane_if_gone(lease.connection, user_id))


def _quietly(step):
    """Run a step of letting go of a lane; Redis or the database being away must not stop the rest."""
    try:
        return step()
    except (redis.exceptions.RedisError, SQLAlchemyError):
        log.warning("letting go of a lane: %s failed", getattr(step, "__name__", "a step"), exc_info=True)
        return None


def forget_dead_worker(lease: LaneLease) -> None:
    """Unregister a killed lane worker from RQ, so rq-dashboard and ``Worker.all()`` stop listing it."""
    rq_adapter.unregister_worker(lease.connection, lease.user_id, worker_name(lease))
