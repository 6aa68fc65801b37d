"""CPU time spent by each part while a scenario ran: where the time goes, per request.

Counted per process tree: web (gunicorn), worker.py with its lane workers (those that exited are
in the supervisor's children times once reaped), this bench process, and the rest of the machine
(PostgreSQL, Redis, and anything else running on a shared host).
"""

from __future__ import annotations

import psutil

PARTS = ("web (gunicorn)", "worker.py + lane workers", "bench client", "rest (PostgreSQL, Redis, other load)")


def _tree_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, its reaped children, and its live descendants."""
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            try:
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
            except psutil.NoSuchProcess:
                pass  # exited meanwhile: counted by its parent once reaped
        return total
    except psutil.NoSuchProcess:
        return 0.0


def _machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def snapshot(web_pid: int, worker_pid: int) -> dict[str, float]:
    web, worker = _tree_seconds(web_pid), _tree_seconds(worker_pid)
    own = psutil.Process().cpu_times()  # not its children: web and worker.py are those
    bench = own.user + own.system
    machine = _machine_busy_seconds()
    return dict(zip(PARTS, (web, worker, bench, machine), strict=True))


def per_request_ms(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """CPU milliseconds per request of each part between two snapshots."""
    spent = {part: after[part] - before[part] for part in PARTS}
    # The machine's busy time includes the three measured parts; the rest is everything else.
    spent[PARTS[3]] = max(0.0, spent[PARTS[3]] - spent[PARTS[0]] - spent[PARTS[1]] - spent[PARTS[2]])
    return {part: 1000 * seconds / max(1, requests) for part, seconds in spent.items()}
