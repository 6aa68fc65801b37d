"""``python -m bench.soak [--seconds N] [--seed S]``: the fault soak; exit 0 only when nothing was violated.

``--sentinel`` runs Redis as a Sentinel deployment and adds the fault ``sentinel_failover``.

Exit status: 0 no violation; 1 at least one violation (the table lists them); 2 the soak could
not run (a server or process would not start, bad arguments).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import traceback
from pathlib import Path


class Interrupted(Exception):
    """SIGTERM: stop, clean up, exit."""


def parse_arguments(argv: list[str] | None):
    from bench.soak.faults import DESCRIPTIONS, default_kinds, refused_kinds

    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 120)),
                        help="traffic time, faults included (default: $SOAK_SECONDS or 120)")
    parser.add_argument("--seed", type=int, default=int(os.environ["SOAK_SEED"]) if os.environ.get("SOAK_SEED")
                        else random.SystemRandom().randrange(1, 10**6), help="makes traffic and faults repeatable")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--supervisors", type=int, default=2)
    parser.add_argument("--lease-seconds", type=int, default=5,
                        help="LANES_LEASE_SECONDS for the run (a freeze lasts longer than this)")
    parser.add_argument("--drain-seconds", type=float, default=90,
                        help="after the traffic, how long acknowledged requests may take to end")
    parser.add_argument("--fault-interval", type=float, default=None,
                        help="mean seconds between faults (default: about 12, at least one of each kind)")
    parser.add_argument("--sentinel", action="store_true", default=os.environ.get("SOAK_SENTINEL", "") == "1",
                        help="Redis as a primary, a replica and three sentinels; Lanes gets a redis+sentinel:// URL, "
                             "the Redis faults hit the primary of the moment, redis_refuse and redis_freeze do not "
                             "apply (default: $SOAK_SENTINEL=1)")
    parser.add_argument("--faults", default=None,
                        help="comma-separated fault kinds (default: all that apply with or without --sentinel): "
                             + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items()))
    parser.add_argument("--recovery-limit", type=float, default=None, metavar="SECONDS",
                        help="also a violation: a fault after which a lane with work took longer to move again")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the logs even when the run passed")
    args = parser.parse_args(argv)
    kinds = (tuple(kind for kind in args.faults.split(",") if kind) if args.faults is not None
             else default_kinds(args.sentinel))
    if not kinds:
        parser.error("no fault kinds given")
    refused = refused_kinds(kinds, args.sentinel)
    if refused:
        parser.error("; ".join(refused))
    if args.seconds < 20 or args.users < 1 or args.supervisors < 2:
        parser.error("needs --seconds >= 20, --users >= 1 and --supervisors >= 2")
    args.kinds = kinds
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    from bench.soak.report import write_json
    from bench.soak.run import Settings, Soak, say

    def interrupt(_signum, _frame):
        raise Interrupted()

    signal.signal(signal.SIGTERM, interrupt)
    settings = Settings(seconds=args.seconds, seed=args.seed, users=args.users, supervisors=args.supervisors,
                        lease_seconds=args.lease_seconds, drain_seconds=args.drain_seconds,
                        fault_interval=args.fault_interval, kinds=args.kinds, keep=args.keep,
                        recovery_limit=args.recovery_limit, sentinel=args.sentinel)
    say(f"seed {settings.seed} (repeat with --seed {settings.seed})")
    soak = Soak(settings)
    outcome = None
    status = 2
    try:
        soak.start()
        outcome = soak.run()
        status = 0 if outcome.verdict.violations == [] else 1
    except (Interrupted, KeyboardInterrupt):
        say("interrupted")
    except Exception:  # noqa: BLE001 - the soak itself could not run: say why, exit 2
        traceback.print_exc()
    finally:
        kept = soak.close(failed=status != 0)
    if outcome is not None:
        print()
        print(outcome.text)
        if args.json:
            outcome.document["logs"] = str(kept) if kept else None
            write_json(args.json, outcome.document)
    if kept:
        say(f"logs kept in {kept}")
    return status


if __name__ == "__main__":
    sys.exit(main())
