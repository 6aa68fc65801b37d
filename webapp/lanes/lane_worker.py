"""The lane worker: one RQ worker bound to one lane, running its jobs in its own process."""

from __future__ import annotations

import logging
import socket
import threading

import setproctitle
from rq import Queue, SimpleWorker
from rq.job import Job

from webapp.extensions import db
from webapp.lanes import keys
from webapp.lanes.cleanup import delete_lane_if_gone
from webapp.lanes.lease import LaneLease
from webapp.lanes.reconciler import repair_lane

log = logging.getLogger(__name__)


class LaneWorker(SimpleWorker):
    """An RQ ``SimpleWorker`` (no fork per job) that serves exactly one lane while it holds its lease.

    It renews the lease from a background thread, checks it before each job, hands the lane
    back after ``fair_share`` jobs in a row when other lanes wait, and exits when idle.
    """

    def __init__(self, user_id: int, lease: LaneLease, fair_share: int, **kwargs):
        self.user_id = user_id
        self.lease = lease
        self.fair_share = fair_share
        self.jobs_in_a_row = 0
        self.lease_lost = threading.Event()
        self.handed_back = False
        queue = Queue(keys.lane_name(user_id), connection=lease.connection)
        super().__init__([queue], connection=lease.connection, name=self.name_for(lease), **kwargs)

    @staticmethod
    def name_for(lease: LaneLease) -> str:
        """The RQ worker name of the lane worker holding ``lease`` (unique per lease)."""
        return f"{socket.gethostname()}.{lease.token.rsplit(':', 1)[-1]}.lane{lease.user_id}"

    def procline(self, message: str) -> None:
        # RQ rewrites the title on every state change; keep ours so ``ps`` names the lane.
        setproctitle.setproctitle(f"lanes {keys.lane_name(self.user_id)}")

    def execute_job(self, job: Job, queue: Queue) -> None:
        if self.lease_lost.is_set() or not self.lease.renew():
            # Another worker may own the lane now: put the job back untouched and stop.
            log.warning("lane %s: lease lost, returning job %s", self.user_id, job.id)
            queue.push_job_id(job.id, at_front=True)
            self.connection.lrem(f"{queue.key}:intermediate", 1, job.id)
            self._stop_requested = True
            return
        super().execute_job(job, queue)
        self.jobs_in_a_row += 1
        if self.jobs_in_a_row >= self.fair_share and self.others_waiting():
            log.info("lane %s: %d jobs in a row while others wait; handing it back", self.user_id, self.jobs_in_a_row)
            self.handed_back = True
            self._stop_requested = True

    def others_waiting(self) -> bool:
        """Whether another lane with work has no worker (its lease is free)."""
        others = [int(member) for member in self.connection.zrange(keys.READY, 0, -1) if int(member) != self.user_id]
        if not others:
            return False
        with self.connection.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.exists(keys.lease(other))
            return not all(pipe.execute())


def renew_until_stopped(worker: LaneWorker, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        try:
            if not worker.lease.renew():
                worker.lease_lost.set()
                return
        except Exception:  # noqa: BLE001 - a Redis blip: try again next round
            log.warning("lane %s: lease renewal failed", worker.user_id, exc_info=True)


def serve_lane(app, user_id: int, lease: LaneLease) -> int:
    """Serve one lane until it is idle, handed back, or stopped. Returns the exit status."""
    config = app.config
    setproctitle.setproctitle(f"lanes {keys.lane_name(user_id)}")
    with app.app_context():
        worker = LaneWorker(user_id, lease, config["LANES_FAIR_SHARE"])
        stop = threading.Event()
        renewer = threading.Thread(
            target=renew_until_stopped, args=(worker, stop, config["LANES_LEASE_SECONDS"] / 3), daemon=True
        )
        renewer.start()
        try:
            repair_lane(lease.connection, user_id)
            worker.work(max_idle_time=config["LANES_IDLE_SECONDS"], logging_level="WARNING")
        finally:
            stop.set()
            renewer.join()
            still_has_work = lease.release()
            if not still_has_work:
                delete_lane_if_gone(lease.connection, user_id)
            db.session.remove()
    return 0


def forget_dead_worker(lease: LaneLease) -> None:
    """Unregister a killed lane worker from RQ, so rq-dashboard and ``Worker.all()`` stop listing it."""
    name = LaneWorker.name_for(lease)
    worker_key = f"{SimpleWorker.redis_worker_namespace_prefix}{name}"
    with lease.connection.pipeline() as pipe:
        pipe.srem(SimpleWorker.redis_workers_keys, worker_key)
        pipe.srem(f"rq:workers:{keys.lane_name(lease.user_id)}", worker_key)
        pipe.delete(worker_key)
        pipe.execute()
