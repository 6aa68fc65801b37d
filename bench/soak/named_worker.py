"""``python -m bench.soak.named_worker``: ``worker.py``, with each process's pid in its PostgreSQL application_name.

The soak's audit trigger records ``application_name`` with every change to a request row, so
the checks can tell which process claimed, advanced and ended each run (a lane worker that
keeps writing to a request after another process re-claimed it ran concurrently with it).
libpq reads ``PGAPPNAME`` at every connect, and lane workers open their own connections after
the fork, so setting it in each forked child is enough. Nothing else differs from ``worker.py``.
"""

import os
import runpy
import sys

APP_NAME_PREFIX = "soak-pid-"


def name_this_process() -> None:
    os.environ["PGAPPNAME"] = f"{APP_NAME_PREFIX}{os.getpid()}"


if __name__ == "__main__":
    name_this_process()
    os.register_at_fork(after_in_child=name_this_process)
    sys.argv = ["worker.py"]
    runpy.run_path("worker.py", run_name="__main__")
