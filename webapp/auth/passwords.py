"""Password hashing with Argon2id (memory-hard), a bounded number at a time.

Each check takes ``LANES_ARGON2_MEMORY_KIB`` (64 MiB) and a core for a while: at most
``LANES_PASSWORD_CHECKS`` run at once per process, and a caller that cannot get a turn within
``LANES_PASSWORD_CHECK_WAIT`` seconds gets 503 with Retry-After (a flood of sign-ins slows sign-ins,
not the whole server). Callers hold no database connection while they wait.
"""

from __future__ import annotations

import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app

from webapp import errors

_turns: dict[int, threading.BoundedSemaphore] = {}
_turns_lock = threading.Lock()


def _turn() -> threading.BoundedSemaphore:
    size = max(1, current_app.config["LANES_PASSWORD_CHECKS"])
    with _turns_lock:
        return _turns.setdefault(size, threading.BoundedSemaphore(size))


def _hasher() -> PasswordHasher:
    config = current_app.config
    return PasswordHasher(memory_cost=config["LANES_ARGON2_MEMORY_KIB"], time_cost=config["LANES_ARGON2_TIME_COST"])


def hash_password(password: str) -> str:
    with _bounded():
        return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    with _bounded():
        try:
            return _hasher().verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


class _bounded:
    """Wait for one of the ``LANES_PASSWORD_CHECKS`` turns, or raise 503 after the configured wait."""

    def __enter__(self):
        self.turn = _turn()
        if not self.turn.acquire(timeout=current_app.config["LANES_PASSWORD_CHECK_WAIT"]):
            raise errors.ServiceUnavailable(
                "Too many sign-ins are being checked right now; try again shortly.", headers={"Retry-After": "5"}
            )
        return self

    def __exit__(self, *_exc):
        self.turn.release()


_DUMMY: dict[str, str] = {}


def burn_time_like_a_check(password: str) -> None:
    """Spend the time a real check takes, so a missing user can't be told apart by timing."""
    key = f"{current_app.config['LANES_ARGON2_MEMORY_KIB']}:{current_app.config['LANES_ARGON2_TIME_COST']}"
    if key not in _DUMMY:
        _DUMMY[key] = hash_password("not-a-real-password")
    verify_password(_DUMMY[key], password)
