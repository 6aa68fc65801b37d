"""One soak run: start everything, drive traffic while faults fire, drain, judge, stop everything."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from webapp.config import PROJECT_ROOT

from . import audit, checks, evidence, report
from .faults import Fault, Injector, default_kinds, plan
from .processes import Lanes, TwoWorkerWatch
from .sentinel import SentinelDeployment
from .servers import PostgresCluster, RedisServer
from .traffic import SoakUser, UserTraffic

CHEAP_ARGON2 = {"LANES_ARGON2_MEMORY_KIB": 1024, "LANES_ARGON2_TIME_COST": 1}
GIVE_UP_SECONDS = 60  # after the traffic ends, a submit still unanswered is retried this long
STOP_SECONDS = 20


@dataclass
class Settings:
    seconds: float
    seed: int
    users: int = 8
    supervisors: int = 2
    lease_seconds: int = 5
    drain_seconds: float = 90
    fault_interval: float | None = None
    kinds: tuple[str, ...] = default_kinds(False)
    pause: tuple[float, float] = (0.1, 0.6)
    keep: bool = False
    recovery_limit: float | None = None
    sentinel: bool = False  # Redis as primary + replica + three sentinels, Lanes on a redis+sentinel:// URL

    def summary(self) -> str:
        return (f"{self.seconds:g} s of traffic, seed {self.seed}, {self.users} users, {self.supervisors} "
                f"supervisors, LANES_LEASE_SECONDS={self.lease_seconds}"
                + (", Redis Sentinel (primary, replica, 3 sentinels)" if self.sentinel else ""))


@dataclass
class Outcome:
    verdict: checks.Verdict
    faults: list[Fault]
    recoveries: dict
    text: str
    document: dict


def say(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Soak:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.scratch = Path(tempfile.mkdtemp(prefix="lanes-soak-"))
        os.chmod(self.scratch, 0o711)
        self.logs = self.scratch / "logs"
        self.logs.mkdir()
        self.run_id = f"s{settings.seed}-{secrets.token_hex(3)}"
        self.postgres = PostgresCluster(self.scratch / "pg")
        self.redis = (SentinelDeployment(self.scratch / "redis") if settings.sentinel
                      else RedisServer(self.scratch / "redis"))
        self.lanes: Lanes | None = None
        self.users: list[SoakUser] = []

    # -- setting up ------------------------------------------------------------------------

    def start(self) -> None:
        say(f"starting PostgreSQL and Redis{' Sentinel' if self.settings.sentinel else ''} of its own under "
            f"{self.scratch}")
        self.postgres.create()
        self.redis.start()
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PG", "LANES_"))}
        env.update({
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis.url,
            "LANES_INSTANCE_DIR": str(self.scratch / "instance"),
            "SECRET_KEY": secrets.token_hex(32),
            "LANES_WORKER_METRICS_PORT": "0",
            "LANES_LEASE_SECONDS": str(self.settings.lease_seconds),
        })
        (self.scratch / "instance").mkdir()
        migrated = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=PROJECT_ROOT,
                                  env=env, capture_output=True, text=True, timeout=300)
        if migrated.returncode != 0:
            raise RuntimeError(f"migrating the soak's database failed:\n{migrated.stderr[-2000:]}")
        audit.install(self.postgres.dsn())
        self._create_users()
        self.lanes = Lanes(env, self.logs, self.redis.url)
        say(f"starting gunicorn and {self.settings.supervisors} supervisors")
        self.lanes.start_web()
        for _ in range(self.settings.supervisors):
            self.lanes.start_supervisor()

    def _create_users(self) -> None:
        from webapp import create_app
        from webapp.auth.accounts import create_user, issue_token
        from webapp.extensions import db

        app = create_app({"INSTANCE_DIR": self.scratch / "instance", "SQLALCHEMY_DATABASE_URI": self.postgres.url,
                          "REDIS_URL": self.redis.url, **CHEAP_ARGON2})
        with app.app_context():
            for index in range(self.settings.users):
                user = create_user(f"soak{index}", secrets.token_urlsafe(24))
                _, token = issue_token(user, "soak")
                self.users.append(SoakUser(index, user.id, user.username, token))
            db.session.remove()
            db.engine.dispose()

    # -- running ---------------------------------------------------------------------------

    def busy_lanes(self) -> set[int]:
        with psycopg.connect(self.postgres.dsn(), connect_timeout=2) as connection:
            return {row[0] for row in connection.execute(
                "SELECT DISTINCT user_id FROM lane_requests WHERE status = 'started'")}

    def long_job_started(self) -> bool:
        """Whether an echo of 3 s or more started within the last second (and still runs)."""
        with psycopg.connect(self.postgres.dsn(), connect_timeout=2) as connection:
            return connection.execute(
                "SELECT EXISTS (SELECT 1 FROM lane_requests WHERE status = 'started' AND type = 'echo'"
                " AND (payload->>'delay_ms')::int >= 3000 AND started_at > now() - interval '1 second')"
            ).fetchone()[0]

    def run(self) -> Outcome:
        settings = self.settings
        faults = plan(settings.seed, settings.seconds, settings.lease_seconds, settings.kinds, settings.fault_interval)
        injector = Injector(self.lanes, self.redis, self.postgres, settings.seed, self.busy_lanes,
                            self.long_job_started)
        stop_submitting = threading.Event()
        clients = [UserTraffic(self.lanes.url, user, settings.seed, self.run_id, stop_submitting, settings.pause)
                   for user in self.users]
        watch = TwoWorkerWatch(self.lanes)
        say(f"traffic for {settings.seconds:g} s with {len(faults)} faults planned")
        began = time.time()
        watch.start()
        for client in clients:
            client.start()
        for fault in faults:
            delay = began + fault.at - time.time()
            if delay > 0:
                time.sleep(delay)
            fired = {f.kind for f in faults if f.began and not f.skipped}
            if time.time() - began > settings.seconds and fault.kind in fired:
                fault.skipped = "the run ended first"  # (a kind that has not fired yet still fires)
                continue
            try:
                injector.fire(fault)
            except Exception as problem:  # noqa: BLE001 - recorded and shown; the run goes on
                fault.error = f"{type(problem).__name__}: {problem}"
                self._restore()
            say(f"fault {fault.kind} {fault.detail} {fault.ended - fault.began:.1f} s"
                + (f" SKIPPED ({fault.skipped})" if fault.skipped else "")
                + (f" ERROR ({fault.error})" if fault.error else ""))
        remaining = began + settings.seconds - time.time()
        if remaining > 0:
            time.sleep(remaining)
        stop_submitting.set()
        traffic_end = time.time()
        for client in clients:
            client.give_up_at = traffic_end + GIVE_UP_SECONDS
        for client in clients:
            client.join(GIVE_UP_SECONDS + 30)
        submits = [submit for client in clients for submit in client.submits]
        acked_ids = [submit.request_id for submit in submits if submit.acknowledged]
        say(f"traffic over: {len(acked_ids)} acknowledged; draining (while requests keep ending, "
            f"until none has for {settings.drain_seconds:g} s, at most {2 * settings.drain_seconds:g} s)")
        self._drain(acked_ids)
        observed_until = time.time()
        watch.stop()
        found = evidence.collect(self.postgres.dsn(), [user.id for user in self.users])
        bad_answers = [bad for client in clients for bad in client.bad_answers]
        verdict = checks.judge(found, submits, bad_answers, faults, watch.sightings)
        recoveries = {id(fault): (checks.recovery_seconds(fault, found.changes, observed_until)
                                  if fault.began and not fault.skipped else (None, False, 0))
                      for fault in faults}
        if settings.recovery_limit is not None:
            for fault in faults:
                seconds, _, busy = recoveries[id(fault)]
                if seconds is not None and seconds > settings.recovery_limit:
                    verdict.add("slow_recovery", fault.ended, f"{fault.kind} {fault.detail}: {busy} lanes with work, "
                                f"the last moved {seconds:.2f} s after it ended (limit {settings.recovery_limit:g} s)")
            checks.attribute(verdict, faults)
        info = {"backpressure_waits": sum(client.backpressure_waits for client in clients),
                "summary": settings.summary(), "seconds": settings.seconds, "seed": settings.seed,
                "users": settings.users, "supervisors": settings.supervisors,
                "lease_seconds": settings.lease_seconds, "drained_seconds": round(observed_until - traffic_end, 1),
                "kinds": list(settings.kinds), "sentinel": settings.sentinel, "redis_ports": self.redis.ports,
                "redis_port": self.redis.ports[0], "postgres_port": self.postgres.port,
                "scratch": str(self.scratch)}
        text = report.render(verdict, faults, recoveries, info)
        return Outcome(verdict, faults, recoveries, text, report.document(verdict, faults, recoveries, info))

    def _drain(self, acked_ids: list[int]) -> None:
        """Wait for every acknowledged request to end: while they keep ending, up to twice ``drain_seconds``.

        A backlog that still moves is not a loss; a lane that does not move for ``drain_seconds``
        leaves its requests unended, and the checks count them as lost.
        """
        began = last_progress = time.monotonic()
        left = len(acked_ids)
        while time.monotonic() - began < 2 * self.settings.drain_seconds:
            try:
                now_left = evidence.unended(self.postgres.dsn(), acked_ids)
            except psycopg.Error:
                now_left = left
            if now_left == 0:
                return
            if now_left < left:
                left, last_progress = now_left, time.monotonic()
            elif time.monotonic() - last_progress > self.settings.drain_seconds:
                return
            time.sleep(0.5)

    def _restore(self) -> None:
        """After a fault that failed half-way: make every part whole again, as far as possible."""
        for fix in (self._restore_redis, self._restore_postgres, self._restore_lanes):
            try:
                fix()
            except Exception as problem:  # noqa: BLE001 - the next fix may still work
                say(f"could not restore: {type(problem).__name__}: {problem}")

    def _restore_redis(self) -> None:
        self.redis.restore()

    def _restore_postgres(self) -> None:
        if not self.postgres.running:
            self.postgres.start()

    def _restore_lanes(self) -> None:
        if self.lanes.web is None or not self.lanes.web.alive():
            self.lanes.start_web()
        for slot, child in enumerate(self.lanes.supervisors):
            if not child.alive():
                self.lanes.start_supervisor(slot)

    # -- stopping --------------------------------------------------------------------------

    def close(self, failed: bool) -> Path | None:
        """Stop everything the soak started; keep the logs (returned) when the run failed or ``keep``."""
        for step in (lambda: self.lanes and self.lanes.stop(STOP_SECONDS), self.redis.stop, self._stop_postgres):
            try:
                step()
            except Exception as problem:  # noqa: BLE001 - stop the rest regardless
                say(f"while stopping: {type(problem).__name__}: {problem}")
        kept = None
        if failed or self.settings.keep:
            kept = self.scratch / "logs"
            for name, log in [("postgres.log", self.postgres.directory / "postgres.log"), *self.redis.log_paths()]:
                if log.exists():
                    shutil.copy(log, kept / name)
        for part in ("pg", "redis", "instance"):
            shutil.rmtree(self.scratch / part, ignore_errors=True)
        if kept is None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return kept

    def _stop_postgres(self) -> None:
        if self.postgres.data.exists():
            try:
                self.postgres.stop("fast")
            except Exception:  # noqa: BLE001 - maybe not running: make sure
                self.postgres.stop("immediate")
