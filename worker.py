"""``python worker.py``: the supervisor that runs one RQ worker per active lane on this host."""

import os
import shutil
import tempfile


def main() -> None:
    # Lane workers are forked: they share metrics through files, and prometheus_client
    # chooses that mode when first imported, so the directory must be set before any import.
    metrics_dir = tempfile.mkdtemp(prefix="lanes-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        from webapp import create_app
        from webapp.lanes.supervisor import Supervisor

        # No ping before each use of a pooled connection: lane workers retry what a dead one fails.
        Supervisor(create_app({"LANES_DB_PRE_PING": False})).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
