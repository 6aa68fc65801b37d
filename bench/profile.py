"""``python -m bench.profile {worker,web} [--cpu]``: where the time of a lane worker or of the web process goes.

Starts a Lanes as ``make bench`` does (``DATABASE_URL`` / ``REDIS_URL`` honoured), puts load on
one side, and samples the real processes with py-spy (``py-spy record --format raw``), then
prints the functions that take the most samples, in milliseconds per request:

- ``worker``: a backlog queued in several lanes while worker.py is paused, drained with no HTTP;
  py-spy follows worker.py and the lane workers it forks (``--subprocesses``).
- ``web``: echo requests submitted over HTTP from several client threads; py-spy samples the
  gunicorn worker process.

"self" is the time in the function's own code, "total" includes what it calls. Without
``--idle`` only samples of threads running on the CPU count (what costs CPU); with it, threads
waiting on a socket count too (where the wall time goes). ``--raw PATH`` keeps py-spy's collapsed
stacks (flamegraph.pl and speedscope read them). py-spy needs ptrace: run as root or with
CAP_SYS_PTRACE (``kernel.yama.ptrace_scope`` 0 also does).

py-spy tells a waiting thread from a running one by its state in the kernel: on a machine whose
load is above its core count, a thread that is runnable but waiting for a core counts as running.
``--cpu`` measures CPU instead, immune to that: cProfile with the process CPU clock, in this
process -- ``worker`` serves the queued lanes with ``serve_lane`` each (a short idle time, as
``bench.worker_stages`` does), ``web`` submits through the Flask app's test client (the whole
Flask request path; gunicorn's HTTP parsing and the Socket.IO relaying are not in it). cProfile
adds its own cost to every call, so read the shares, not the absolute milliseconds.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ATTACH_SECONDS = 1.0  # py-spy needs a moment to attach before the load starts
FRAME_NOISE = ("process ", "thread ")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install -r requirements-dev.txt")
    return found


class Recording:
    """``py-spy record`` of one process (and its children) until stopped."""

    def __init__(self, pid: int, output: Path, rate: int, idle: bool, subprocesses: bool):
        command = [py_spy(), "record", "--pid", str(pid), "--format", "raw", "--output", str(output),
                   "--rate", str(rate), "--function", "--nonblocking"]
        if idle:
            command.append("--idle")
        if subprocesses:
            command.append("--subprocesses")
        self.output = output
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(ATTACH_SECONDS)
        if self.process.poll() is not None:
            raise SystemExit(f"py-spy could not attach to {pid}:\n{self.process.stdout.read()}")

    def stop(self) -> None:
        """SIGINT makes py-spy write its output and exit."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if not self.output.exists():
            raise SystemExit(f"py-spy wrote nothing:\n{self.process.stdout.read()}")


def read_stacks(path: Path) -> list[tuple[str, list[str], int]]:
    """(process, frames root first, samples) of each line of py-spy's raw (collapsed) output."""
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames or not count.isdigit():
            continue
        parts = frames.split(";")
        process = next((p for p in parts if p.startswith("process ")), "")
        stacks.append((process, [p for p in parts if not p.startswith(FRAME_NOISE)], int(count)))
    return stacks


def report(stacks, rate: int, requests: int, top: int) -> str:
    """Per process kind, then the top functions by self and by total time, in ms per request."""
    per_request_ms = 1000 / rate / requests
    samples = sum(count for _, _, count in stacks)
    lines = [f"{samples} samples at {rate} Hz over {requests} requests = {samples * per_request_ms:.2f} ms "
             f"of sampled time per request"]
    by_process: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for process, frames, count in stacks:
        by_process[process_kind(process, frames)] += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if len(by_process) > 1 or "" not in by_process:
        lines.append("\nby process:")
        for kind, count in by_process.most_common():
            lines.append(f"  {count * per_request_ms:7.3f} ms  {100 * count / samples:5.1f}%  {kind}")
    for title, counter in (("self (own code)", own), ("total (with callees)", total)):
        lines.append(f"\ntop {top} functions by {title}, ms per request:")
        for frame, count in counter.most_common(top):
            lines.append(f"  {count * per_request_ms:7.3f} ms  {100 * count / samples:5.1f}%  {frame}")
    return "\n".join(lines)


def process_kind(process: str, frames: list[str]) -> str:
    """'lane workers', 'worker.py (supervisor)' or the command line py-spy saw.

    A forked lane worker keeps its parent's command line for py-spy, and the supervisor's frames
    below ``serve_lane``: that frame is what tells them apart.
    """
    if any(frame.startswith("serve_lane ") for frame in frames):
        return "lane workers"
    if "worker.py" in process:
        return "worker.py (supervisor)"
    return process.split(":", 1)[-1].strip('"') or "(one process)"


def profile_worker(stack, count: int, lanes: int, rate: int, idle: bool, output: Path) -> None:
    from bench.drain import queue_backlog, wait_until_ended

    ids = [user.id for user in stack.new_users("profile", lanes)]
    queue_backlog(stack, ids, count)
    try:
        recording = Recording(stack.worker.pid, output, rate, idle, subprocesses=True)
    finally:
        stack.resume_worker()
    try:
        wait_until_ended(stack, ids, count)
    finally:
        recording.stop()


def profile_web(stack, count: int, lanes: int, threads: int, rate: int, idle: bool, output: Path) -> None:
    from bench.clients import ApiClient

    web = stack.start_web()
    users = stack.new_users("profile", lanes)
    ApiClient(web.url, users[0].token).submit("echo", {"message": "warm-up"})
    next_index = iter(range(count))
    lock = threading.Lock()

    def submitter() -> None:
        api = ApiClient(web.url)
        try:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                api.submit("echo", {"message": "bench"}, token=users[index % lanes].token)
        finally:
            api.close()

    recording = Recording(web.worker_process().pid, output, rate, idle, subprocesses=False)
    try:
        pool = [threading.Thread(target=submitter) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        recording.stop()


def cpu_profile_worker(stack, count: int, lanes: int):
    """cProfile (CPU clock) of ``LaneWorker``s serving ``count`` queued echo requests in this process."""
    import cProfile

    from webapp.lanes.lane_worker import serve_lane
    from webapp.lanes.lease import LaneLease
    from webapp.lanes.service import submit_request

    users = stack.new_users("profile", lanes)
    profiler = cProfile.Profile(time.process_time)
    with stack.app.app_context():
        for index in range(count):
            submit_request(users[index % lanes].id, "echo", {"message": "bench"})
    stack.app.config.update(LANES_IDLE_SECONDS=0.05, LANES_FAIR_SHARE=count + 1)
    for user in users:
        lease = LaneLease(stack.redis, user.id, f"bench-profile:{time.time_ns()}", 600)
        if not lease.acquire():
            raise SystemExit(f"the lane of user {user.id} is already leased")
        profiler.enable()
        serve_lane(stack.app, user.id, lease)  # gives the lease back when its lane is empty
        profiler.disable()
    return profiler


def cpu_profile_web(stack, count: int, lanes: int):
    """cProfile (CPU clock) of ``count`` submits through the Flask app's test client."""
    import cProfile

    users = stack.new_users("profile", lanes)
    client = stack.app.test_client()
    body = {"type": "echo", "payload": {"message": "bench"}}
    headers = [{"Authorization": f"Bearer {user.token}"} for user in users]
    client.post("/api/v1/requests", json=body, headers=headers[0])  # first-call costs out of the way
    profiler = cProfile.Profile(time.process_time)
    for index in range(count - 1):
        profiler.enable()
        response = client.post("/api/v1/requests", json=body, headers=headers[index % lanes])
        profiler.disable()
        if response.status_code != 202:
            raise SystemExit(f"submit answered {response.status_code}: {response.get_data(as_text=True)}")
    return profiler


def cpu_report(profiler, requests: int, top: int) -> str:
    """The top functions by own CPU and by CPU with callees, in ms per request."""
    import pstats

    stats = pstats.Stats(profiler).stats
    per_request_ms = 1000 / requests
    total = sum(own for _, _, own, _, _ in stats.values())
    lines = [f"{total * per_request_ms:.2f} ms of CPU per request under cProfile"]

    def name(function) -> str:
        filename, line, function_name = function
        short = "/".join(Path(filename).parts[-2:]) if filename != "~" else ""
        return f"{function_name} ({short}:{line})" if short else function_name

    for title, index in (("self (own code)", 2), ("total (with callees)", 3)):
        lines.append(f"\ntop {top} functions by {title}, ms of CPU per request:")
        ranked = sorted(stats.items(), key=lambda item: item[1][index], reverse=True)[:top]
        for function, values in ranked:
            lines.append(f"  {values[index] * per_request_ms:7.3f} ms  {100 * values[index] / total:5.1f}%  "
                         f"{values[1] / requests:6.1f} calls  {name(function)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=("worker", "web"), help="which process to sample")
    parser.add_argument("--count", type=int, default=1000, help="echo requests (default 1000)")
    parser.add_argument("--lanes", type=int, default=10, help="users (lanes) they are spread over (default 10)")
    parser.add_argument("--threads", type=int, default=16, help="client threads for 'web' (default 16)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second (default 250)")
    parser.add_argument("--idle", action="store_true", help="count threads waiting on I/O too (wall time)")
    parser.add_argument("--top", type=int, default=30, help="functions listed (default 30)")
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks in this file")
    parser.add_argument("--cpu", action="store_true", help="cProfile with the CPU clock, in this process")
    args = parser.parse_args(argv)
    if not 1 <= args.count // max(1, args.lanes) <= 500:
        parser.error("count / lanes must be 1..500 per lane (the submit rate limit allows 600 a minute)")

    from bench.stack import Stack

    if args.cpu:
        stack = Stack()
        try:
            stack.start(worker=False)
            if args.side == "worker":
                text = cpu_report(cpu_profile_worker(stack, args.count, args.lanes), args.count, args.top)
            else:
                text = cpu_report(cpu_profile_web(stack, args.count, args.lanes), args.count - 1, args.top)
        finally:
            for problem in stack.close():
                print(f"bench.profile: {problem}", file=sys.stderr)
        what = "lane workers serving" if args.side == "worker" else "Flask app (test client) submitting"
        print(f"cProfile (CPU clock) of the {what} {args.count} echo requests over {args.lanes} lanes")
        print(text)
        return 0

    py_spy()
    stack = Stack()
    try:
        stack.start()
        output = args.raw or stack.scratch / "py-spy.txt"
        if args.side == "worker":
            profile_worker(stack, args.count, args.lanes, args.rate, args.idle, output)
        else:
            profile_web(stack, args.count, args.lanes, args.threads, args.rate, args.idle, output)
        text = report(read_stacks(output), args.rate, args.count, args.top)
    finally:
        for problem in stack.close():
            print(f"bench.profile: {problem}", file=sys.stderr)
    what = "lane workers and worker.py, draining a backlog" if args.side == "worker" else "gunicorn worker, submits"
    print(f"py-spy profile of the {what}: {args.count} echo requests over {args.lanes} lanes"
          + (" (idle threads included: wall time)" if args.idle else " (on-CPU samples only)"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
