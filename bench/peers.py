"""The peers, measured in the same run on the same Redis: Celery (solo pool) and RQ (SimpleWorker).

Each peer runs one worker process on a trivial task (``bench.peer_tasks.echo``) and is measured
three ways, as a user of that queue would see it:
- burst: N jobs submitted back to back from one client thread, timed from the first submit to the
  last result seen by the client;
- drain: a gate job holds the (already running) worker while N jobs are queued behind it; the
  drain is timed from the gate opening to the last job's own "ran at" time (the worker's clock);
- warm turnaround: one job at a time, from the submit call returned to the result seen
  (Celery: ``AsyncResult.get()``, which waits on the Redis result backend's pub/sub; RQ:
  ``Job.latest_result(timeout=...)``, which blocks on the job's results stream).
Everything the peers leave in Redis names the run's token and is deleted afterwards.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import psutil
import redis
from rq.group import Group

from bench.counting import counting_env, delta
from bench.counting import read as read_counts
from bench.results import Measurement, ScenarioReport
from bench.stack import Child, Stack

READY_SECONDS = 60
RESULT_TIMEOUT_SECONDS = 300  # a job later than this means the peer is stuck (the machine may be very busy)
WAIT_STEP_SECONDS = 10  # each blocking wait for a result, below any socket timeout

# Measurement names the targets refer to.
BURST = "burst: N submitted -> all results seen"
DRAIN = "drain: backlog of N, gate opened -> last job ran"
WARM = "warm turnaround: submit returned -> result seen"


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system + times.children_user + times.children_system


class Peer:
    """One peer queue: start its worker, submit, wait, and clean up after itself."""

    name = ""
    version = ""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.token = f"bench-peer-{uuid.uuid4().hex[:8]}"
        self.counts_dir = stack.scratch / f"counts-{self.name}"
        self.worker: Child | None = None
        self.serial = 0
        # A client of its own, without the app's socket timeout: its blocking reads may be long.
        self.connection = redis.Redis.from_url(stack.redis_url)

    def env(self) -> dict:
        env = counting_env(self.stack.env, self.counts_dir)
        env.update(BENCH_PEER_REDIS_URL=self.stack.redis_url, BENCH_CELERY_QUEUE=self.token)
        return env

    def wait(self, handle, what: str):
        """The job's return value; RuntimeError when it has none within RESULT_TIMEOUT_SECONDS."""
        deadline = time.monotonic() + RESULT_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                value = self.result(handle, WAIT_STEP_SECONDS)
            except redis.exceptions.TimeoutError:
                handle = self.fresh(handle)  # a blocking read outlived its socket's timeout: wait again
                continue
            if value is not None:
                return value
        raise RuntimeError(f"{self.name}: {what} had no result within {RESULT_TIMEOUT_SECONDS} s")

    def job_id(self) -> str:
        self.serial += 1
        return f"{self.token}-{self.serial}"

    def start(self) -> None:
        self.worker = Child(self.command(), self.env(), self.stack.scratch / f"{self.name}.log")
        deadline = time.monotonic() + READY_SECONDS
        handle = self.submit_echo()
        while time.monotonic() < deadline:
            if self.worker.process.poll() is not None:
                raise RuntimeError(f"the {self.name} worker exited:\n{self.worker.log_tail()}")
            if self.result(handle, timeout=1) is not None:
                return
        raise RuntimeError(f"the {self.name} worker served nothing within {READY_SECONDS} s:\n"
                           f"{self.worker.log_tail()}")

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop(10)
            self.worker = None
        self.forget_keys()
        self.connection.close()

    def forget_keys(self) -> None:
        """Delete every key naming this run's token (queue, jobs, results, worker) and set members."""
        connection = self.stack.redis
        mine = list(connection.scan_iter(match=f"*{self.token}*", count=1000))
        if mine:
            connection.delete(*mine)
        for index in ("rq:workers", "rq:queues"):
            members = [m for m in connection.smembers(index) if self.token.encode() in m]
            if members:
                connection.srem(index, *members)
        # RQ's own maintenance marker, which its worker sets whatever the queue (Lanes' workers never do).
        connection.delete(Group.REDIS_GROUP_CLEANING_KEY)

    # -- the three measurements ---------------------------------------------------------

    def burst(self, count: int) -> tuple[float, float, float]:
        """(jobs/s until all results seen, submits/s, worker CPU ms per job)."""
        cpu_before = cpu_seconds(self.worker.pid)
        began = time.perf_counter()
        handles = [self.submit_echo() for _ in range(count)]
        submitted = time.perf_counter()
        for handle in handles:
            self.wait(handle, "a burst job")
        seen = time.perf_counter()
        cpu = cpu_seconds(self.worker.pid) - cpu_before
        return count / (seen - began), count / (submitted - began), 1000 * cpu / count

    def drain(self, count: int) -> tuple[float, float, dict[str, float]]:
        """(jobs/s, worker CPU ms per job, worker's Redis commands per job) over a queued backlog."""
        gate_key = f"{self.token}-gate"
        gate = self.submit_gate(gate_key)
        connection = self.connection
        if connection.blpop([f"{gate_key}:entered"], timeout=RESULT_TIMEOUT_SECONDS) is None:
            raise RuntimeError(f"{self.name}: the gate job did not start")
        handles = [self.submit_echo() for _ in range(count)]
        counts_before = read_counts(str(self.counts_dir))
        cpu_before = cpu_seconds(self.worker.pid)
        connection.lpush(gate_key, "open")
        opened = self.wait(gate, "the gate job")
        ran_at = [self.wait(handle, "a backlog job")["at"] for handle in handles]
        cpu = cpu_seconds(self.worker.pid) - cpu_before
        counts_after = read_counts(str(self.counts_dir))
        per_job = delta(counts_before, counts_after, count)
        return count / (max(ran_at) - opened), 1000 * cpu / count, per_job

    def warm(self, count: int) -> list[float]:
        """Milliseconds from each submit call's return to its result seen, one job at a time."""
        samples = []
        for _ in range(count):
            handle = self.submit_echo()
            returned = time.perf_counter()
            self.wait(handle, "a warm job")
            samples.append(1000 * (time.perf_counter() - returned))
        return samples

    # -- per peer -----------------------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def submit_echo(self):
        raise NotImplementedError

    def submit_gate(self, key: str):
        raise NotImplementedError

    def result(self, handle, timeout: float):
        """The job's return value once it has one; None when ``timeout`` passed first."""
        raise NotImplementedError

    def fresh(self, handle):
        """A new handle on the same job, after a wait on ``handle`` failed."""
        return handle


class CeleryPeer(Peer):
    name = "celery"

    def __init__(self, stack: Stack):
        super().__init__(stack)
        import celery

        self.version = celery.__version__
        os.environ["BENCH_PEER_REDIS_URL"] = stack.redis_url
        os.environ["BENCH_CELERY_QUEUE"] = self.token
        from bench import peer_tasks

        # The module was configured when first imported: point the client at this run's queue.
        peer_tasks.celery_app.conf.update(broker_url=stack.redis_url, result_backend=stack.redis_url,
                                          task_default_queue=self.token)
        self.tasks = peer_tasks

    def command(self) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "bench.peer_tasks:celery_app", "worker",
                "--pool", "solo", "--concurrency", "1", "--queues", self.token, "--hostname", f"{self.token}@bench",
                "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]

    def submit_echo(self):
        return self.tasks.celery_echo.apply_async(("bench",), task_id=self.job_id(), queue=self.token)

    def submit_gate(self, key: str):
        return self.tasks.celery_gate.apply_async((key,), task_id=self.job_id(), queue=self.token)

    def fresh(self, handle):
        return self.tasks.celery_app.AsyncResult(handle.id)

    def result(self, handle, timeout: float):
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            value = handle.get(timeout=timeout, propagate=False)
        except CeleryTimeout:
            return None
        if handle.failed():  # the task raised: get() returned its exception
            raise RuntimeError(f"celery: job {handle.id} ended FAILURE: {value!r}")
        return value

    def stop(self) -> None:
        super().stop()
        from bench import peer_tasks

        peer_tasks.celery_app.close()  # its result consumer's pub/sub connection
        self.forget_kombu_keys()

    def forget_kombu_keys(self) -> None:
        """kombu's Redis transport keeps unacked-message bookkeeping under fixed names: remove it if empty."""
        connection = self.stack.redis
        for key in ("unacked", "unacked_index"):
            if connection.exists(key) and connection.type(key) in (b"hash", b"zset"):
                size = connection.hlen(key) if connection.type(key) == b"hash" else connection.zcard(key)
                if size == 0:
                    connection.delete(key)


class RqPeer(Peer):
    name = "rq"

    def __init__(self, stack: Stack):
        super().__init__(stack)
        import rq
        from rq import Queue

        self.version = rq.__version__
        self.queue = Queue(self.token, connection=self.connection)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "rq.cli", "worker", "--url", self.stack.redis_url,
                "--worker-class", "rq.worker.SimpleWorker", "--name", f"{self.token}-worker",
                "--logging_level", "WARNING", self.token]

    def submit_echo(self):
        return self.queue.enqueue("bench.peer_tasks.echo", "bench", job_id=self.job_id())

    def submit_gate(self, key: str):
        return self.queue.enqueue("bench.peer_tasks.gate", key, job_id=self.job_id())

    def result(self, handle, timeout: float):
        from rq.results import Result

        found = handle.latest_result(timeout=max(1, round(timeout)))
        if found is None:
            return None
        if found.type != Result.Type.SUCCESSFUL:
            raise RuntimeError(f"rq: job {handle.id} ended {found.type.name}: {found.exc_string}")
        return found.return_value


def measure_peer(peer_class, stack: Stack, sizes) -> ScenarioReport:
    peer = peer_class(stack)
    n = sizes.peer_jobs
    report = ScenarioReport(peer.name, f"Peer: {peer.name} {peer.version}, one worker process, trivial task, "
                                       f"same Redis")
    try:
        peer.start()
        peer.warm(5)  # connections and imports settled on both sides
        burst_rate, submit_rate, burst_cpu = peer.burst(n)
        drain_rate, drain_cpu, drain_counts = peer.drain(n)
        warm_ms = peer.warm(sizes.peer_warm)
    finally:
        peer.stop()
    report.add(Measurement(BURST, "jobs/s", burst_rate, note=f"N={n}, submitted at {submit_rate:.0f}/s"))
    report.add(Measurement(DRAIN, "jobs/s", drain_rate, note=f"N={n}"))
    report.add(Measurement.of_samples(WARM, "ms", warm_ms))
    report.add(Measurement("  worker CPU per job, burst", "ms", burst_cpu))
    report.add(Measurement("  worker CPU per job, drain", "ms", drain_cpu))
    report.add(Measurement("  worker Redis commands per job, drain", "/job", drain_counts["redis_commands"],
                           note=f"{drain_counts['redis_round_trips']:.1f} round trips per job"))
    return report


def celery_peer(stack: Stack, _web, sizes) -> ScenarioReport:
    report = measure_peer(CeleryPeer, stack, sizes)
    report.notes.append("celery worker --pool solo --concurrency 1 (Redis broker and result backend); "
                        "results seen with AsyncResult.get() (the Redis backend's pub/sub)")
    return report


def rq_peer(stack: Stack, _web, sizes) -> ScenarioReport:
    report = measure_peer(RqPeer, stack, sizes)
    report.notes.append("rq worker --worker-class rq.worker.SimpleWorker (no fork per job); "
                        "results seen with Job.latest_result(timeout=...)")
    return report
