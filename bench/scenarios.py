"""The four measurements: warm-lane turnaround, cold-lane start, throughput, and idle connections.

Every time is measured in this process with ``time.perf_counter()``: from the moment the submit
call returned to the moment the event arrived on the Socket.IO client. Where a target is relative,
both sides are measured in the same run, on the same processes.
"""

from __future__ import annotations

import queue
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from statistics import median

import socketio

from bench import counting, cpu_usage
from bench.clients import ApiClient, LiveEvents, SubmitRefused, Submitted
from bench.drain import lanes_drain, server_commands
from bench.peers import celery_peer, rq_peer
from bench.results import Measurement, ScenarioReport
from bench.stack import BenchUser, Stack, WebServer
from webapp.launcher import WEB_THREADS

ECHO = {"message": "bench"}
EVENT_TIMEOUT_SECONDS = 30  # an event later than this counts as missing
LONG_POLL_DELAYS_MS = (0, 300)  # an instant job, and one that ends between two database polls
LOADED_SLACK_MS = 10  # idle connections may add this much (or double the baseline) to a turnaround
CONNECT_THREADS = 32
IDLE_USERS = 10
FD_HEADROOM = 1024


# Measurement names the targets refer to.
WARM_FINISHED = "finished event after submit returned"
COLD_STARTED = "started event after submit returned"
END_TO_END = "end to end (first submit -> last finished event)"
CPU_PREFIX = "  CPU/request: "


class ScenarioError(RuntimeError):
    """A scenario could not measure (the message says why)."""


@dataclass
class Sizes:
    warm_requests: int = 200
    cold_users: int = 20
    throughput_requests: int = 1000
    throughput_users: int = 10
    throughput_threads: int = 16
    idle_connections: int = 1000
    idle_hold_seconds: float = 30  # longer than Socket.IO's ping interval (25 s)
    probe_requests: int = 20
    peer_jobs: int = 1000  # each peer's burst and drain
    peer_warm: int = 200
    drain_requests: int = 1000
    drain_lanes: int = 10


QUICK = Sizes(warm_requests=20, cold_users=3, throughput_requests=60, throughput_users=3, throughput_threads=3,
              idle_connections=50, idle_hold_seconds=1, probe_requests=5, peer_jobs=30, peer_warm=10,
              drain_requests=30, drain_lanes=3)


def ms(seconds: float) -> float:
    return seconds * 1000


def epoch(timestamp: str) -> float:
    """An API timestamp (ISO 8601, ``Z``) as seconds since the epoch."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


# -- one request at a time ------------------------------------------------------------------


@dataclass
class Turnarounds:
    """Sequential submits of one user: per request, the submit call and the events after it."""

    submit_ms: list[float] = field(default_factory=list)
    started_ms: list[float] = field(default_factory=list)
    finished_ms: list[float] = field(default_factory=list)
    phases_ms: dict[str, list[float]] = field(default_factory=dict)
    missing: int = 0

    def add_phases(self, submitted: Submitted, body: dict, arrived_wall: float) -> None:
        """Where the time went, from the row's own timestamps (web and worker share this clock)."""
        created, started, ended = (epoch(body[key]) for key in ("created_at", "started_at", "ended_at"))
        for name, seconds in (
            ("submit: call -> row created", created - submitted.wall_began),
            ("submit: row created -> answer read", submitted.wall_returned - created),
            ("lane: row created -> job started", started - created),
            ("job: started -> ended", ended - started),
            ("event: ended -> finished received", arrived_wall - ended),
        ):
            self.phases_ms.setdefault(name, []).append(ms(seconds))


def warm_up(api: ApiClient, live: LiveEvents) -> None:
    """One request through the lane, so that its worker is running for the ones measured."""
    submitted = api.submit("echo", ECHO)
    if live.end_of(submitted.request_id, EVENT_TIMEOUT_SECONDS) is None:
        raise ScenarioError(f"the warm-up request got no end event within {EVENT_TIMEOUT_SECONDS} s")


def measure_turnarounds(api: ApiClient, live: LiveEvents, count: int) -> Turnarounds:
    """Submit ``count`` echo requests one at a time, each after the previous one's end event."""
    found = Turnarounds()
    for _ in range(count):
        submitted = api.submit("echo", ECHO)
        found.submit_ms.append(ms(submitted.seconds))
        end = live.end_of(submitted.request_id, EVENT_TIMEOUT_SECONDS)
        if end is None or end[0] != "request.finished":
            found.missing += 1
            continue
        _, arrived, arrived_wall, body = end
        found.finished_ms.append(ms(arrived - submitted.returned))
        started = live.arrival("request.started", submitted.request_id, 0)
        if started is not None:
            found.started_ms.append(ms(started[0] - submitted.returned))
        found.add_phases(submitted, body, arrived_wall)
    return found


def measure_long_polls(api: ApiClient, count: int, delay_ms: int) -> tuple[list[float], int]:
    """Submit ``count`` echo requests one at a time, each followed by ``?wait=``: ms from submit to answer."""
    answered_ms, unfinished = [], 0
    for _ in range(count):
        submitted = api.submit("echo", {**ECHO, "delay_ms": delay_ms})
        body = api.wait(submitted.request_id, EVENT_TIMEOUT_SECONDS)
        answered = time.perf_counter()
        if body["status"] != "finished":
            unfinished += 1
            continue
        answered_ms.append(ms(answered - submitted.returned) - delay_ms)
    return answered_ms, unfinished


def read_counts(stack: Stack, web: WebServer) -> tuple[dict[str, int], dict[str, int]]:
    """What the web process and the worker side have counted so far (statements, commands)."""
    return counting.read(str(stack.web_counts(web))), counting.read(str(stack.worker_counts))


def cpu_measurements(before: dict[str, float], after: dict[str, float], requests: int) -> list[Measurement]:
    return [Measurement(f"{CPU_PREFIX}{part}", "ms", spent)
            for part, spent in cpu_usage.per_request_ms(before, after, requests).items()]


def missing_measurement(name: str, missing: int) -> Measurement:
    return Measurement(name, "count", missing, target="0", met=missing == 0,
                       note=f"no finished event within {EVENT_TIMEOUT_SECONDS} s" if missing else "")


# -- 1. warm lane ---------------------------------------------------------------------------


def warm_lane(stack: Stack, web: WebServer, sizes: Sizes) -> ScenarioReport:
    n = sizes.warm_requests
    report = ScenarioReport("warm", f"1. Warm lane: {n} echo requests, one at a time, lane worker running")
    user = stack.new_user("warm")
    api, live = ApiClient(web.url, user.token), LiveEvents(web.url, user.token).connect()
    try:
        warm_up(api, live)
        cpu_before = cpu_usage.snapshot(web.pid, stack.worker.pid)
        found = measure_turnarounds(api, live, n)
        cpu_after = cpu_usage.snapshot(web.pid, stack.worker.pid)
        long_polls = {delay: measure_long_polls(api, max(5, n // 4), delay) for delay in LONG_POLL_DELAYS_MS}
    finally:
        live.close()
        api.close()
    # Judged in the targets block, as a ratio to Celery's warm turnaround in the same run.
    report.add(Measurement.of_samples(WARM_FINISHED, "ms", found.finished_ms))
    report.add(Measurement.of_samples("submit call (POST /api/v1/requests)", "ms", found.submit_ms))
    report.add(Measurement.of_samples("started event after submit returned", "ms", found.started_ms))
    report.add(missing_measurement("finished events missing", found.missing))
    for delay, (answered_ms, unfinished) in long_polls.items():
        report.add(Measurement.of_samples(
            f"?wait= answered after submit returned (echo, {delay} ms job time not counted)", "ms", answered_ms,
            note=f"{unfinished} not finished when answered" if unfinished else "",
        ))
    for name, samples in found.phases_ms.items():
        report.add(Measurement.of_samples(f"  {name}", "ms", samples))
    for measurement in cpu_measurements(cpu_before, cpu_after, n):
        report.add(measurement)
    report.notes.append(
        "phases come from the request's created_at/started_at/ended_at, stamped by web and worker on this clock"
    )
    return report


# -- 2. cold lane ---------------------------------------------------------------------------


def cold_lane(stack: Stack, web: WebServer, sizes: Sizes) -> ScenarioReport:
    k = sizes.cold_users
    report = ScenarioReport("cold", f"2. Cold lane: {k} fresh users, no lane worker running for them")
    users = stack.new_users("cold", k)
    clients = [(ApiClient(web.url, user.token), LiveEvents(web.url, user.token).connect()) for user in users]
    started_ms, finished_ms, missing = [], [], 0
    try:
        for api, live in clients:
            submitted = api.submit("echo", ECHO)
            started = live.arrival("request.started", submitted.request_id, EVENT_TIMEOUT_SECONDS)
            end = live.end_of(submitted.request_id, EVENT_TIMEOUT_SECONDS)
            if started is None or end is None:
                missing += 1
                continue
            started_ms.append(ms(started[0] - submitted.returned))
            finished_ms.append(ms(end[1] - submitted.returned))
    finally:
        for api, live in clients:
            live.close()
            api.close()
    report.add(Measurement.of_samples(COLD_STARTED, "ms", started_ms))  # judged in the targets block
    report.add(Measurement.of_samples("finished event after submit returned", "ms", finished_ms))
    report.add(missing_measurement("events missing", missing))
    report.notes.append("each user submits once: the supervisor must take the lease and start a lane worker "
                        "(hand the lane to its spare, or fork one)")
    return report


# -- 3. throughput --------------------------------------------------------------------------


def throughput(stack: Stack, web: WebServer, sizes: Sizes) -> ScenarioReport:
    m, u, t = sizes.throughput_requests, sizes.throughput_users, sizes.throughput_threads
    report = ScenarioReport("throughput", f"3. Throughput: {m} echo requests over {u} users, {t} client threads")
    users = stack.new_users("load", u)
    listeners = [LiveEvents(web.url, user.token).connect() for user in users]
    work: queue.SimpleQueue[tuple[int, BenchUser]] = queue.SimpleQueue()
    for index in range(m):  # round-robin over the users, as independent scripts would interleave
        work.put((index % u, users[index % u]))
    submitted: list[list[Submitted]] = [[] for _ in users]
    refused: list[str] = []
    lock = threading.Lock()

    def submitter() -> None:
        api = ApiClient(web.url)
        try:
            while True:
                try:
                    index, user = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    done = api.submit("echo", ECHO, token=user.token)
                except SubmitRefused as refusal:
                    with lock:
                        refused.append(str(refusal))
                    continue
                with lock:
                    submitted[index].append(done)
        finally:
            api.close()

    try:
        counts_before = read_counts(stack, web)
        server_before = server_commands(stack.redis)
        cpu_before = cpu_usage.snapshot(web.pid, stack.worker.pid)
        began = time.perf_counter()
        threads = [threading.Thread(target=submitter, name=f"submitter-{i}") for i in range(t)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        submits_done = time.perf_counter()
        deadline = time.monotonic() + max(60.0, m / 10)
        for listener, sent in zip(listeners, submitted, strict=True):
            listener.wait_for_count("request.finished", len(sent), max(0.0, deadline - time.monotonic()))
        cpu_after = cpu_usage.snapshot(web.pid, stack.worker.pid)
        server_after = server_commands(stack.redis)
        counts_after = read_counts(stack, web)
    finally:
        for listener in listeners:
            listener.close()

    turnaround_ms, last_end, missing = [], None, 0
    for listener, sent in zip(listeners, submitted, strict=True):
        for request in sent:
            arrival = listener.arrivals.get(("request.finished", request.request_id))
            if arrival is None:
                missing += 1
                continue
            turnaround_ms.append(ms(arrival[0] - request.returned))
            last_end = arrival[0] if last_end is None else max(last_end, arrival[0])
    finished = len(turnaround_ms)
    elapsed = (last_end - began) if last_end is not None else None
    report.add(Measurement(
        END_TO_END, "req/s",
        finished / elapsed if elapsed else None,
        note=f"{finished} finished in {elapsed:.2f} s" if elapsed else "nothing finished",
    ))
    submitted_count = sum(len(sent) for sent in submitted)
    report.add(Measurement("submits answered (202)", "req/s", submitted_count / (submits_done - began),
                           note=f"{submitted_count} in {submits_done - began:.2f} s"))
    report.add(Measurement.of_samples("finished event after submit returned, under load", "ms", turnaround_ms))
    report.add(Measurement("requests refused or missing", "count", len(refused) + missing, target="0",
                           met=not refused and not missing,
                           note=(refused[0] if refused else "") + (f"; {missing} missing" if missing else "")))
    for measurement in cpu_measurements(cpu_before, cpu_after, m):
        report.add(measurement)
    for side, before, after in zip(("web", "worker side"), counts_before, counts_after, strict=True):
        per = counting.delta(before, after, m)
        report.add(Measurement(f"  {side}: database statements per request", "/job", per["statements"],
                               note=f"+ {per['transactions']:.2f} commits/rollbacks"))
        report.add(Measurement(f"  {side}: Redis commands per request", "/job", per["redis_commands"],
                               note=f"{per['redis_round_trips']:.2f} round trips"))
    report.add(Measurement("  Redis server: commands run per request (INFO commandstats)", "/job",
                           (server_after - server_before) / m,
                           note="server-wide: Lua scripts' inner commands and other clients included"))
    report.notes.append(f"{u} lanes run side by side on {web.flags}")
    report.notes.append("statements and commands are counted in each process's client (bench/counting)")
    return report


# -- 4. idle connections --------------------------------------------------------------------


def raise_open_files_limit(wanted: int) -> tuple[int, str | None]:
    """Raise this process's soft RLIMIT_NOFILE (children inherit it) to ``wanted`` if the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft, None
    new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    note = f"raised the open-files soft limit from {soft} to {new_soft}"
    if new_soft < wanted:
        note += f" (the hard limit; {wanted} wanted)"
    return new_soft, note


def rss_mb(web: WebServer) -> tuple[float, int]:
    """The gunicorn worker's resident memory (MB) and thread count."""
    worker = web.worker_process()
    return worker.memory_info().rss / 2**20, worker.num_threads()


def open_connections(web: WebServer, users: list[BenchUser], count: int) -> tuple[list[LiveEvents], list[str]]:
    """``count`` connections spread over ``users``, opened by a pool of threads."""
    def connect(index: int) -> LiveEvents | str:
        live = LiveEvents(web.url, users[index % len(users)].token, record=False)
        try:
            return live.connect()
        except (socketio.exceptions.SocketIOError, OSError) as problem:
            return f"{type(problem).__name__}: {problem}"

    with ThreadPoolExecutor(max_workers=CONNECT_THREADS) as pool:
        outcomes = list(pool.map(connect, range(count)))
    return [o for o in outcomes if isinstance(o, LiveEvents)], [o for o in outcomes if isinstance(o, str)]


def connections_seen_by_server(stack: Stack, users: list[BenchUser]) -> int:
    """Open Socket.IO connections that the web process has registered as present."""
    from webapp.lanes import keys

    now = time.time()
    with stack.redis.pipeline(transaction=False) as pipe:
        for user in users:
            pipe.zrangebyscore(keys.presence(user.id), now, "+inf")
        return sum(1 for members in pipe.execute() for member in members if member.startswith(b"sio:"))


def idle_connections(stack: Stack, _main_web: WebServer | None, sizes: Sizes) -> ScenarioReport:
    """Runs on a web process of its own, started with a thread per connection."""
    count = sizes.idle_connections
    report = ScenarioReport("idle", f"4. Idle connections: {count} Socket.IO clients held by one web process")
    limit, note = raise_open_files_limit(2 * count + FD_HEADROOM)
    if note:
        report.notes.append(note)
    if limit < count + FD_HEADROOM // 2:
        count = max(1, limit - FD_HEADROOM // 2)
        report.notes.append(f"only {count} connections fit in the open-files limit {limit}")
    # Each WebSocket holds one of gunicorn's threads, and gthread accepts at most --worker-connections:
    # the launcher's flags hold 1,000; more connections get a web process sized for them.
    if count + 100 <= WEB_THREADS:
        web = stack.start_web()
        report.notes.append(f"a web process of its own, with the launcher's flags: {web.flags}")
    else:
        web = stack.start_web(threads=count + 100, worker_connections=count + 300)
        report.notes.append(f"a web process of its own, sized for {count} sockets: {web.flags}")
    probe_user = stack.new_user("probe")
    idle_users = stack.new_users("idle", min(IDLE_USERS, max(1, count - 1)))
    api, probe = ApiClient(web.url, probe_user.token), LiveEvents(web.url, probe_user.token).connect()
    others: list[LiveEvents] = []
    try:
        warm_up(api, probe)
        baseline = measure_turnarounds(api, probe, sizes.probe_requests)
        rss_before, threads_before = rss_mb(web)

        opening = time.perf_counter()
        others, failures = open_connections(web, idle_users, count - 1)
        opened_seconds = time.perf_counter() - opening
        time.sleep(sizes.idle_hold_seconds)
        held = sum(1 for live in others if live.connected) + int(probe.connected)
        server_count = connections_seen_by_server(stack, [probe_user, *idle_users])
        rss_after, threads_after = rss_mb(web)

        warm_up(api, probe)  # its lane worker may have gone idle while the connections opened
        loaded = measure_turnarounds(api, probe, sizes.probe_requests)
    finally:
        with ThreadPoolExecutor(max_workers=CONNECT_THREADS) as pool:
            list(pool.map(LiveEvents.close, others))
        probe.close()
        api.close()
        stack.stop_web(web)

    report.add(Measurement(
        f"connections held after {sizes.idle_hold_seconds:g} s", "count", held, target=f"{count} (all)",
        met=held == count and server_count == count,
        note=f"opened in {opened_seconds:.1f} s by {CONNECT_THREADS} threads; the server counts {server_count}"
             + (f"; {len(failures)} failed, e.g. {failures[0]}" if failures else ""),
    ))
    report.add(Measurement("web worker RSS, 1 connection", "MB", rss_before, note=f"{threads_before} threads"))
    per_connection_kb = (rss_after - rss_before) * 1024 / max(1, held - 1)
    report.add(Measurement(f"web worker RSS, {count} connections", "MB", rss_after,
                           note=f"+{rss_after - rss_before:.1f} MB, {per_connection_kb:.0f} KB per connection; "
                                f"{threads_after} threads"))
    report.add(Measurement.of_samples("finished after submit, 1 connection (baseline)", "ms", baseline.finished_ms))
    loaded_measurement = report.add(Measurement.of_samples(
        f"finished after submit, {count} connections", "ms", loaded.finished_ms,
        target=f"<= 2x baseline or +{LOADED_SLACK_MS} ms",
    ))
    ratio = None
    if baseline.finished_ms and loaded.finished_ms:
        base = median(baseline.finished_ms)
        ratio = loaded_measurement.median / base if base > 0 else None
        loaded_measurement.met = loaded_measurement.median <= max(2 * base, base + LOADED_SLACK_MS)
    else:
        loaded_measurement.met = False
    report.add(Measurement("ratio of medians, loaded / baseline", "ratio", ratio))
    report.add(missing_measurement("finished events missing", baseline.missing + loaded.missing))
    return report


# name -> function(stack, main web server, sizes); in the order they run.
SCENARIOS = {
    "celery": celery_peer, "rq": rq_peer,  # the peers first, while Lanes is idle
    "drain": lanes_drain,  # before any lane worker runs: it needs worker.py without children
    "warm": warm_lane, "cold": cold_lane, "throughput": throughput, "idle": idle_connections,
}
