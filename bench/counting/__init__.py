"""Counting the database statements and Redis commands of the processes the bench starts.

``sitecustomize.py`` beside this file does the counting inside each process; this package is the
bench's side: the environment that switches it on, and the sums read back.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.counting.sitecustomize import FIELDS, read

DIRECTORY = str(Path(__file__).resolve().parent)

__all__ = ["FIELDS", "counting_env", "delta", "read"]


def counting_env(env: dict, directory: Path) -> dict:
    """``env`` with counting switched on for the processes started with it, writing to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (DIRECTORY, env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, "LANES_COUNT_STATEMENTS": str(directory)}


def delta(before: dict[str, int], after: dict[str, int], per: int) -> dict[str, float]:
    """What was counted between two readings, per request."""
    return {field: (after[field] - before[field]) / max(1, per) for field in FIELDS}
