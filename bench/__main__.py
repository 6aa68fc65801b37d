"""``python -m bench [--quick] [--only NAME]``: start a Lanes, measure it, print a table, write JSON.

Exit status: 0 whenever the run completed, whether or not every target was met; 1 when Lanes
could not be started or a scenario could not measure; 2 for bad arguments or missing packages.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "latest.json"


class Interrupted(Exception):
    """SIGTERM arrived: stop what runs, clean up, and exit."""


def parse_arguments(argv: list[str] | None):
    from bench.scenarios import SCENARIOS

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run for tests)")
    parser.add_argument("--only", action="append", choices=SCENARIOS, metavar="NAME",
                        help=f"run only this scenario ({', '.join(SCENARIOS)}); may be repeated")
    parser.add_argument("--results", type=Path, default=RESULTS_FILE, metavar="PATH",
                        help="where to write the JSON results (default: bench/results/latest.json)")
    return parser.parse_args(argv)


def say(message: str = "") -> None:
    print(message, flush=True)


def run_scenario(name: str, stack, main_web, sizes):
    from bench.results import ScenarioReport
    from bench.scenarios import SCENARIOS

    began = time.monotonic()
    try:
        report = SCENARIOS[name](stack, main_web, sizes)
    except (Interrupted, KeyboardInterrupt):
        raise
    except Exception as problem:  # noqa: BLE001 - one scenario's failure is reported; the others still run
        report = ScenarioReport(name, f"{name}: could not measure")
        report.error = f"{type(problem).__name__}: {problem}"
        traceback.print_exc()
    report.seconds = time.monotonic() - began
    return report


def main(argv: list[str] | None = None) -> int:
    try:
        import psutil  # noqa: F401
        import requests  # noqa: F401
        import websocket  # noqa: F401 - python-socketio's WebSocket transport
    except ImportError as missing:
        print(f"The benchmark needs {missing.name} (requirements-dev.txt): "
              ".venv/bin/pip install -r requirements-dev.txt", file=sys.stderr)
        return 2
    args = parse_arguments(argv)

    from bench.results import render_table, results_document, write_json
    from bench.scenarios import QUICK, SCENARIOS, Sizes
    from bench.stack import Stack, StackError

    def interrupt(_signum, _frame):
        raise Interrupted()

    signal.signal(signal.SIGTERM, interrupt)
    sizes = QUICK if args.quick else Sizes()
    names = [name for name in SCENARIOS if not args.only or name in args.only]
    started_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    began = time.monotonic()
    stack = Stack()
    reports = []
    try:
        say("Lanes benchmark: starting Redis, database, worker.py and gunicorn...")
        stack.start()
        environment = stack.environment()
        main_web = stack.start_web() if set(names) - {"idle"} else None
        if main_web is not None:
            environment["web"] = f"gunicorn {main_web.flags} (the launcher's flags)"
        environment["sizes"] = ", ".join(f"{key}={value}" for key, value in vars(sizes).items())
        for name in names:
            say(f"Running {name}...")
            reports.append(run_scenario(name, stack, main_web, sizes))
    except StackError as problem:
        print(f"Lanes benchmark: could not start Lanes: {problem}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt):
        print("Lanes benchmark: interrupted; cleaning up.", file=sys.stderr)
        return 130
    finally:
        for problem in stack.close():
            print(f"Lanes benchmark: {problem}", file=sys.stderr)

    from bench.targets import judge

    reports.append(judge(reports))
    seconds = time.monotonic() - began
    environment["load average"] += "; at the end: " + ", ".join(f"{value:.2f}" for value in os.getloadavg())
    say()
    say(render_table(environment, reports))
    options = {"quick": args.quick, "only": names}
    write_json(args.results, results_document(environment, reports, started_at, seconds, options))
    say(f"\nResults written to {args.results} ({seconds:.0f} s in all).")
    return 1 if any(report.error for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
