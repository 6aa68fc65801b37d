"""Password hashing with Argon2id (memory-hard), a bounded number at a time, at low CPU priority.

Each check takes ``LANES_ARGON2_MEMORY_KIB`` (64 MiB) and a core for a while. Checks run on a
small pool of ``LANES_PASSWORD_CHECKS`` threads per process, niced so that the other requests of
the process come first; a caller whose check has not started within ``LANES_PASSWORD_CHECK_WAIT``
seconds gets 503 with Retry-After (a flood of sign-ins slows sign-ins, not the whole server).
Callers hold no database connection while they wait. (argon2-cffi releases the GIL meanwhile.)
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app

from webapp import errors

CHECK_NICENESS = 10
_pools: dict[tuple[int, int], concurrent.futures.ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _lower_priority() -> None:
    try:  # on Linux each thread has its own nice value
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CHECK_NICENESS)
    except (AttributeError, OSError):
        pass  # elsewhere: the pool still bounds how many run at once


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    size = max(1, current_app.config["LANES_PASSWORD_CHECKS"])
    key = (os.getpid(), size)  # a forked child starts its own threads
    with _pools_lock:
        if key not in _pools:
            _pools[key] = concurrent.futures.ThreadPoolExecutor(
                max_workers=size, thread_name_prefix="lanes-password-check", initializer=_lower_priority
            )
        return _pools[key]


def _bounded(function, *args):
    """Run ``function(*args)`` on the check pool; 503 if it could not start within the configured wait."""
    future = _pool().submit(function, *args)
    try:
        return future.result(timeout=current_app.config["LANES_PASSWORD_CHECK_WAIT"])
    except concurrent.futures.TimeoutError:
        if not future.cancel():  # already running: it ends within a check's time
            return future.result()
        raise errors.ServiceUnavailable(
            "Too many sign-ins are being checked right now; try again shortly.", headers={"Retry-After": "5"}
        ) from None


def _hasher() -> PasswordHasher:
    config = current_app.config
    return PasswordHasher(memory_cost=config["LANES_ARGON2_MEMORY_KIB"], time_cost=config["LANES_ARGON2_TIME_COST"])


def hash_password(password: str) -> str:
    return _bounded(_hasher().hash, password)


def verify_password(password_hash: str, password: str) -> bool:
    return _bounded(_verify, _hasher(), password_hash, password)


def _verify(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY: dict[str, str] = {}


def burn_time_like_a_check(password: str) -> None:
    """Spend the time a real check takes, so a missing user can't be told apart by timing."""
    key = f"{current_app.config['LANES_ARGON2_MEMORY_KIB']}:{current_app.config['LANES_ARGON2_TIME_COST']}"
    if key not in _DUMMY:
        _DUMMY[key] = hash_password("not-a-real-password")
    verify_password(_DUMMY[key], password)
