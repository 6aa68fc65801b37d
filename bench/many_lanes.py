"""``python -m bench.many_lanes``: more lanes active at once than PostgreSQL has connections.

It creates a scratch database on the PostgreSQL that ``DATABASE_URL`` names (default
``postgresql://postgres@127.0.0.1:5432/postgres``; the server's ``max_connections`` is read and
reported), starts Debian's PgBouncer in transaction mode in front of it with a server pool well
under that limit, then a web process and N supervisors (``worker.py``) that reach the database
only through PgBouncer with ``LANES_DB_POOLER=transaction``. Every user submits a short delayed
echo every ``--spacing`` seconds, their starts spread over one spacing, with ``LANES_IDLE_SECONDS``
longer than the spacing: every user's lane keeps its lane worker, so all lanes are active at once
while only a few run a job at any moment (``--spacing 0`` submits everything at once instead; on
a small machine that measures the CPU, not the connections). It samples PostgreSQL's and
PgBouncer's connection counts and the running requests, and reports connection errors (logs),
lane-worker crashes (the supervisors' ``lanes_lane_worker_exits_total``) and whether every lane
progressed (every request finished, each started once). Redis: ``REDIS_URL``, else an embedded one.

Exit status: 0 when every target was met, 1 when one was missed, 2 when it could not run.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import psycopg
from sqlalchemy.engine import make_url

from bench.stack import is_spare

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
USS_PER_LANE_MIB = 25  # a lane worker's own memory (~21 MiB measured), with a margin
DATABASE_ERRORS = re.compile(r"too many clients|remaining connection slots|no more connections allowed|"
                             r"prepared statement|OperationalError|server login failed|pooler error",
                             re.IGNORECASE)
REDIS_ERRORS = re.compile(r"could not connect to Redis|redis\.exceptions\.", re.IGNORECASE)
CRASHED = re.compile(r'lanes_lane_worker_exits_total\{outcome="crashed"\} ([0-9.e+]+)')
SAMPLE_SECONDS = 0.5
RUNNING = "SELECT count(*) FROM lane_requests WHERE status = 'started'"


def crash_lines(lines: list[str], context: int = 12) -> list[str]:
    """The supervisors' lines about lane workers that died, each with the traceback that follows it."""
    found: list[str] = []
    for index, line in enumerate(lines):
        if "crashed" in line or "died (status" in line:
            found.extend(lines[index:index + context] if "crashed" in line else [line])
    return found


def say(message: str = "") -> None:
    print(message, flush=True)


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.many_lanes", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=500, help="lanes to make active at once (default 500)")
    parser.add_argument("--supervisors", type=int, default=4, help="worker.py processes (default 4)")
    parser.add_argument("--requests", type=int, default=8, help="echo requests per user (default 8)")
    parser.add_argument("--delay-ms", type=int, default=500, help="each echo's delay (default 500)")
    parser.add_argument("--spacing", type=float, default=45.0,
                        help="seconds between one user's submits (default 45; 0 = all at once)")
    parser.add_argument("--pool-size", type=int, default=20,
                        help="PgBouncer's server connections to the database (default 20)")
    parser.add_argument("--timeout", type=float, default=600, help="give up waiting after this many seconds")
    return parser.parse_args(argv)


def memory_available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


class Sampler(threading.Thread):
    """Every half second: PostgreSQL's connections (all, and to the scratch database), the running
    requests, and PgBouncer's clients and server connections; keeps the peaks."""

    def __init__(self, server_url: str, database: str, bouncer, supervisor_pids: list[int]):
        super().__init__(daemon=True)
        self.server_url, self.database, self.bouncer = server_url, database, bouncer
        self.supervisor_pids = supervisor_pids
        self.failed_samples = 0
        self.stop = threading.Event()
        self.peaks = {"lanes active at once (lane workers alive)": 0,
                      "server connections (all databases)": 0, "server connections (this database)": 0,
                      "requests running at once": 0, "PgBouncer clients": 0, "PgBouncer server connections": 0,
                      "PgBouncer clients waiting": 0}
        self.max_wait_seconds = 0.0

    def run(self) -> None:
        scratch = make_url(self.server_url).set(database=self.database).render_as_string(hide_password=False)
        connection = None
        while not self.stop.wait(SAMPLE_SECONDS):
            # A starved machine may time a probe out: count it and go on with the next sample.
            try:
                self._peak("lanes active at once (lane workers alive)", lane_workers(self.supervisor_pids))
                if connection is None:
                    connection = psycopg.connect(scratch, autocommit=True, prepare_threshold=None, connect_timeout=10)
                everyone, ours = connection.execute(
                    "SELECT count(*), count(*) FILTER (WHERE datname = current_database())"
                    " FROM pg_stat_activity WHERE backend_type = 'client backend'").fetchone()
                running = connection.execute(RUNNING).fetchone()[0]
                self._peak("server connections (all databases)", everyone - 1)  # not this sampler's
                self._peak("server connections (this database)", ours - 1)
                self._peak("requests running at once", running)
                pools = [pool for pool in self.bouncer.show("POOLS") if pool["database"] == self.database]
                self._peak("PgBouncer clients", sum(p["cl_active"] + p["cl_waiting"] for p in pools))
                self._peak("PgBouncer clients waiting", sum(p["cl_waiting"] for p in pools))
                self._peak("PgBouncer server connections", sum(
                    p["sv_active"] + p["sv_idle"] + p["sv_used"] + p["sv_tested"] + p["sv_login"] for p in pools))
                self.max_wait_seconds = max(self.max_wait_seconds, max(
                    (p["maxwait"] + p["maxwait_us"] / 1e6 for p in pools), default=0.0))
            except (psycopg.Error, OSError, psutil.Error):
                self.failed_samples += 1
                if connection is not None and connection.broken:
                    connection = None
        if connection is not None:
            connection.close()

    def _peak(self, name: str, value: int) -> None:
        self.peaks[name] = max(self.peaks[name], value)


def lane_workers(supervisor_pids: list[int]) -> int:
    """Lane workers alive now: the supervisors' child processes, their spares aside."""
    return sum(1 for pid in supervisor_pids for child in psutil.Process(pid).children() if not is_spare(child))


def crashed_lane_workers(ports: list[int]) -> int:
    """The sum of ``lanes_lane_worker_exits_total{outcome="crashed"}`` over the supervisors."""
    total = 0
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
            found = CRASHED.search(response.read().decode())
        total += int(float(found.group(1))) if found else 0
    return total


def main(argv=None) -> int:
    args = parse_arguments(argv)
    from bench.pgbouncer import PgBouncer, PgBouncerError, pgbouncer_installed
    from bench.stack import Child, Stack, StackError
    from webapp.embedded_redis import free_loopback_port

    if not pgbouncer_installed():
        say("Debian's pgbouncer is not installed: apt-get install -y pgbouncer")
        return 2
    needed = args.users * USS_PER_LANE_MIB + 2048
    if memory_available_mib() < needed:
        say(f"{args.users} lane workers need about {needed} MiB; only {memory_available_mib()} MiB are available")
        return 2
    server_url = os.environ.get("DATABASE_URL") or DEFAULT_SERVER
    if make_url(server_url).get_backend_name() != "postgresql":
        say("DATABASE_URL must name a PostgreSQL server")
        return 2
    admin = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    database = f"lanes_many_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        max_connections = int(connection.execute("SHOW max_connections").fetchone()[0])
        connection.execute(f'CREATE DATABASE "{database}"')
    direct_url = make_url(server_url).set(database=database).render_as_string(hide_password=False)

    bouncer = PgBouncer(direct_url, pool_size=args.pool_size, max_client_conn=args.users * 3 + 200)
    stack = None
    supervisors: list = []
    sampler = None
    os.environ["DATABASE_URL"] = direct_url  # the bench's own app and the migrations: straight to PostgreSQL
    try:
        bouncer.start()
        stack = Stack()
        stack.start(worker=False)
        through_pooler = bouncer.url_for(direct_url)
        stack.env.update(DATABASE_URL=through_pooler, LANES_DB_POOLER="transaction",
                         LANES_MAX_WORKERS=str(-(-args.users // args.supervisors)),
                         LANES_SUBMIT_RATE="100000/minute",
                         LANES_IDLE_SECONDS=str(max(10, int(args.spacing * 2 + 10))))
        say(f"PostgreSQL max_connections = {max_connections}; PgBouncer (transaction mode) on port {bouncer.port} "
            f"with {args.pool_size} server connections; database {database}")
        say(f"creating {args.users} users ...")
        users = stack.new_users("lane", args.users)
        metrics_ports = [free_loopback_port() for _ in range(args.supervisors)]
        for number, port in enumerate(metrics_ports):
            env = {**stack.env, "LANES_WORKER_METRICS_PORT": str(port)}
            supervisors.append(Child([sys.executable, "worker.py"], env, stack.scratch / f"worker{number}.log"))
        web = stack.start_web()
        wait_for_supervisors(stack, supervisors)

        sampler = Sampler(server_url, database, bouncer, [child.pid for child in supervisors])
        sampler.start()
        say(f"{args.users} users submit {args.requests} echo of {args.delay_ms} ms each, {args.spacing} s apart; "
            f"{args.supervisors} supervisors with LANES_MAX_WORKERS={stack.env['LANES_MAX_WORKERS']}, "
            f"LANES_IDLE_SECONDS={stack.env['LANES_IDLE_SECONDS']} ...")
        began = time.monotonic()
        refused = submit_all(web.url, users, args.requests, args.delay_ms, args.spacing)
        submitted_in = time.monotonic() - began
        outcome = wait_for_the_end(stack, users, args.requests, args.timeout)
        elapsed = time.monotonic() - began
        sampler.stop.set()
        sampler.join(10)
        crashed = crashed_lane_workers(metrics_ports)
        logs = [child.log_path for child in (*supervisors, web)] + [bouncer.log_path]
        lines = [line for path in logs for line in path.read_text(errors="replace").splitlines()]
        database_errors = [line for line in lines if DATABASE_ERRORS.search(line)]
        redis_errors = [line for line in lines if REDIS_ERRORS.search(line)]
        leases_lost = sum(1 for line in lines if "lease lost" in line or "lease renewal failed" in line)
        crash_reports = crash_lines(lines)
    except (StackError, PgBouncerError, OSError, psycopg.Error) as problem:
        say(f"could not run: {problem}")
        return 2
    finally:
        if sampler is not None:
            sampler.stop.set()
        for child in supervisors:
            child.stop(30)
        if stack is not None:
            for problem in stack.close():
                say(problem)
        bouncer.stop()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    progressed, rerun, statuses, first_start = outcome
    rows = [
        ("PostgreSQL max_connections", max_connections, "100"),
        ("PgBouncer server pool (default_pool_size)", args.pool_size, f"< {max_connections}"),
        ("lanes (users), supervisors x LANES_MAX_WORKERS",
         f"{args.users}, {args.supervisors} x {-(-args.users // args.supervisors)}", ""),
        *((name, value, "") for name, value in sampler.peaks.items()),
        ("PgBouncer longest client wait", f"{sampler.max_wait_seconds:.2f} s", ""),
        ("submits refused (not 202)", refused, "0"),
        ("submit time for all requests", f"{submitted_in:.1f} s", ""),
        ("first request started, slowest lane", f"{first_start:.1f} s after the first submit", ""),
        ("requests by final status", statuses, "all finished"),
        ("lanes that progressed (every request finished, started once)", f"{progressed} / {args.users}",
         f"{args.users} / {args.users}"),
        ("requests started more than once", rerun, "0"),
        (f"lease lost or not renewed (LANES_LEASE_SECONDS={os.environ.get('LANES_LEASE_SECONDS', 15)})",
         leases_lost, ""),
        ("lane-worker crashes (lanes_lane_worker_exits_total{outcome=crashed})", crashed, "0"),
        ("database connection errors in web, worker and PgBouncer logs", len(database_errors), "0"),
        ("Redis errors in those logs", len(redis_errors), ""),
        ("run time", f"{elapsed:.0f} s", ""),
        ("load average at the end (1, 5, 15 min)", ", ".join(f"{v:.1f}" for v in os.getloadavg()), ""),
    ]
    width = max(len(name) for name, _, _ in rows)
    for name, value, target in rows:
        say(f"{name:<{width}}  {value!s:<32} {target}")
    for line in (database_errors[:10] + redis_errors[:5] + crash_reports[:40]):
        say(f"  log: {line[:200]}")
    if sampler.failed_samples:
        say(f"  ({sampler.failed_samples} samples timed out on the busy machine and were skipped)")
    met = (sampler.peaks["lanes active at once (lane workers alive)"] >= args.users and progressed == args.users
           and crashed == 0 and not database_errors and refused == 0 and rerun == 0)
    say("every target met" if met else "a target was missed")
    return 0 if met else 1


def wait_for_supervisors(stack, supervisors, timeout: float = 60) -> None:
    from bench.stack import StackError
    from webapp.lanes import keys

    pids = {str(child.pid) for child in supervisors}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in supervisors:
            if child.process.poll() is not None:
                raise StackError(f"worker.py exited (code {child.process.returncode}):\n{child.log_tail()}")
        seen = {member.decode().split(":")[1] for member in stack.redis.zrange(keys.SUPERVISORS, 0, -1)}
        if pids <= seen:
            return
        time.sleep(0.1)
    raise StackError(f"the supervisors did not start within {timeout} s")


def submit_all(base_url: str, users, requests_each: int, delay_ms: int, spacing: float) -> int:
    """Submit each user's requests ``spacing`` s apart, users' starts spread over one spacing (by 32
    threads); how many were refused. A user's next submit waits for the previous one's answer."""
    from bench.clients import ApiClient, SubmitRefused

    began = time.monotonic()
    schedule = sorted((began + spacing * (number + index / len(users)), index, number)
                      for index in range(len(users)) for number in range(requests_each))
    done = {(index, number): threading.Event() for _, index, number in schedule}

    def submit(index: int, number: int) -> int:
        if number:
            done[(index, number - 1)].wait()
        # A new connection each time: a kept-alive one idle past gunicorn's keep-alive may be
        # closed by the server just as the next request goes out, and a POST is not retried.
        client = ApiClient(base_url)
        user = users[index]
        try:
            client.submit("echo", {"message": f"{user.name} {number}", "delay_ms": delay_ms}, token=user.token)
            return 0
        except SubmitRefused as problem:
            say(f"  {user.name}: {problem}")
            return 1
        finally:
            client.close()
            done[(index, number)].set()

    futures = []
    with ThreadPoolExecutor(32) as pool:
        for at, index, number in schedule:
            time.sleep(max(0.0, at - time.monotonic()))
            futures.append(pool.submit(submit, index, number))
        return sum(future.result() for future in futures)


def wait_for_the_end(stack, users, requests_each: int, timeout: float):
    """Wait until every request ended; (lanes that progressed, re-runs, statuses, slowest first start)."""
    from sqlalchemy import func, select

    from webapp.extensions import db
    from webapp.models import LaneRequest

    ids = [user.id for user in users]
    deadline = time.monotonic() + timeout
    with stack.app.app_context():
        while time.monotonic() < deadline:
            open_count = db.session.scalar(select(func.count()).select_from(LaneRequest).where(
                LaneRequest.user_id.in_(ids), LaneRequest.status.in_(("queued", "started"))))
            db.session.rollback()
            if open_count == 0:
                break
            time.sleep(1)
        rows = db.session.execute(select(LaneRequest.user_id, LaneRequest.status, LaneRequest.attempts,
                                         LaneRequest.created_at, LaneRequest.started_at)
                                  .where(LaneRequest.user_id.in_(ids))).all()
        db.session.remove()
    statuses: dict[str, int] = {}
    by_user: dict[int, list] = {}
    for row in rows:
        statuses[row.status] = statuses.get(row.status, 0) + 1
        by_user.setdefault(row.user_id, []).append(row)
    progressed = sum(1 for mine in by_user.values()
                     if len(mine) == requests_each and all(r.status == "finished" and r.attempts == 1 for r in mine))
    rerun = sum(1 for row in rows if row.attempts > 1)
    first_submit = min((row.created_at for row in rows), default=None)
    first_starts = [min(r.started_at for r in mine if r.started_at) for mine in by_user.values()
                    if any(r.started_at for r in mine)]
    slowest = (max(first_starts) - first_submit).total_seconds() if first_starts else float("nan")
    return progressed, rerun, statuses, slowest


if __name__ == "__main__":
    sys.exit(main())
