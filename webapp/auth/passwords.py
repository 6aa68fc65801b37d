"""Password hashing with Argon2id (memory-hard)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app


def _hasher() -> PasswordHasher:
    config = current_app.config
    return PasswordHasher(memory_cost=config["LANES_ARGON2_MEMORY_KIB"], time_cost=config["LANES_ARGON2_TIME_COST"])


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY: dict[str, str] = {}


def burn_time_like_a_check(password: str) -> None:
    """Spend the time a real check takes, so a missing user can't be told apart by timing."""
    key = f"{current_app.config['LANES_ARGON2_MEMORY_KIB']}:{current_app.config['LANES_ARGON2_TIME_COST']}"
    if key not in _DUMMY:
        _DUMMY[key] = hash_password("not-a-real-password")
    verify_password(_DUMMY[key], password)
