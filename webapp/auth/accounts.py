"""Accounts: creating users, checking credentials (with failed-login throttling), API tokens."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime
from typing import NamedTuple

from flask import current_app
from sqlalchemy import bindparam, select, update
from zxcvbn import zxcvbn

from webapp import errors, system_log
from webapp.auth.passwords import burn_time_like_a_check, hash_password, verify_password
from webapp.auth.throttle import login_throttle
from webapp.extensions import db
from webapp.models import ApiToken, User, UserSession, utcnow

USERNAME_RE = re.compile(r"^[a-z0-9_.-]{3,32}$")
MAX_PASSWORD_LENGTH = 1024
# zxcvbn's score: 3 means "safely unguessable" (over 10^8 guesses to find); below it is refused.
MIN_PASSWORD_SCORE = 3
MAX_TOKEN_NAME = 100
TOKEN_PREFIX = "lanes_"


class AccountError(ValueError):
    """A user-facing problem with a username or password."""


def validate_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        raise AccountError("User names are 3 to 32 characters of a-z, 0-9, '_', '.' and '-'.")
    return username


def validate_password(password: str, username: str | None = None) -> str:
    """The password if long enough (``LANES_MIN_PASSWORD_LENGTH``) and not a common or guessable one."""
    minimum = current_app.config["LANES_MIN_PASSWORD_LENGTH"]
    if not isinstance(password, str) or len(password) < minimum:
        raise AccountError(f"Passwords need at least {minimum} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"Passwords may have at most {MAX_PASSWORD_LENGTH} characters.")
    # zxcvbn knows lists of common passwords, words, names, keyboard walks and dates; only the
    # first 100 characters are scored (its cost grows with the length, and length alone is plenty).
    strength = zxcvbn(password[:100], user_inputs=[username] if username else [])
    if strength["score"] < MIN_PASSWORD_SCORE:
        hint = strength["feedback"].get("warning") or "It is too easy to guess."
        raise AccountError(f"Choose a less common password. {hint}".strip())
    return password


def create_user(username: str, password: str, is_admin: bool = False) -> User:
    validate_username(username)
    validate_password(password, username)
    if db.session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AccountError(f"The user name {username!r} is taken.")
    user = User(username=username, password_hash=hash_password(password), is_admin=is_admin)
    db.session.add(user)
    db.session.commit()
    system_log.record("user.created", subject=username, details={"admin": is_admin})
    return user


def set_password(user: User, password: str) -> int:
    """Give ``user`` a new password and end all their browser sessions; returns how many ended."""
    validate_password(password, user.username)
    user.password_hash = hash_password(password)
    ended = end_sessions(user.id, commit=False)
    db.session.commit()
    system_log.record("user.password_changed", subject=user.username, details={"sessions_ended": ended})
    return ended


def start_session(user: User) -> str:
    """A new server-side session for ``user``; its id goes into the signed cookie."""
    sid = secrets.token_hex(16)
    db.session.add(UserSession(id=sid, user_id=user.id))
    db.session.commit()
    return sid


def end_sessions(user_id: int, session_id: str | None = None, commit: bool = True) -> int:
    """End one session of the user (``session_id``) or all of them; returns how many were open."""
    statement = update(UserSession).where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
    if session_id is not None:
        statement = statement.where(UserSession.id == session_id)
    ended = db.session.execute(statement.values(ended_at=utcnow())).rowcount
    if commit:
        db.session.commit()
    return ended


def find_user(username: str) -> User | None:
    """The user of this name; None for a name no user can have (never looked up: NUL, say)."""
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        return None
    return db.session.scalar(select(User).where(User.username == username))


def authenticate(username: str, password: str, address: str, via: str = "web") -> User:
    """The user with these credentials, or ``InvalidCredentials``; ``RateLimited`` while throttled.

    Each attempt takes a place under both limits *before* its password is checked, so a burst
    in parallel cannot get more checks than the limit; a success gives its place back (only
    failures count), and while throttled even a right password fails.
    """
    account = str(username)[:64]
    attempt = login_throttle.reserve(account, address)
    if attempt.refused:
        system_log.record("sign_in.throttled", actor=account, address=address, details={"via": via})
        raise errors.RateLimited(
            "Too many failed sign-ins; try again later.", details={"retry_after": attempt.retry_after},
            headers={"Retry-After": str(attempt.retry_after)},
        )
    user = find_user(username)
    # The slow part comes next: end the transaction so that no pooled connection waits with it.
    db.session.commit()
    try:
        if user is None:
            burn_time_like_a_check(str(password))
        right = user is not None and isinstance(password, str) and verify_password(user.password_hash, password)
    except errors.ServiceUnavailable:
        login_throttle.give_back(attempt)  # not checked: not a failure
        raise
    if not right:
        system_log.record("sign_in.failed", actor=account, address=address, details={"via": via})
        raise errors.InvalidCredentials()
    login_throttle.give_back(attempt)
    system_log.record("sign_in.ok", actor=user.username, address=address, details={"via": via})
    return user


def token_digest(token: str) -> str:
    # surrogatepass: any string a client sends (JSON may carry a lone surrogate) has a digest, matching nothing.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_name_problem(name) -> str | None:
    """Why ``name`` cannot name a token (shown next to the field), or None."""
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= MAX_TOKEN_NAME:
        return f"must be a string of 1 to {MAX_TOKEN_NAME} characters"
    if not name.isprintable():
        return "must not contain control characters"
    return None


def issue_token(user: User, name: str | None = None) -> tuple[ApiToken, str]:
    """Create an API token (256 random bits); the plain token is returned once, only its hash is kept."""
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user.id, name=(name or "API token")[:100], token_hash=token_digest(plain))
    db.session.add(token)
    db.session.commit()
    system_log.record("token.created", actor=user.username, subject=token.name, details={"token_id": token.id})
    return token, plain


def user_for_token(plain: str) -> tuple[User, ApiToken] | None:
    row = db.session.execute(
        select(User, ApiToken)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == token_digest(plain), ApiToken.revoked_at.is_(None))
    ).first()
    return (row[0], row[1]) if row else None


class TokenHolder(NamedTuple):
    """Who an API token signs in, as the API needs it on every call (no ORM objects: cheaper)."""

    id: int  # the user's
    username: str
    token_id: int
    last_used_at: datetime | None


# Built once: the API's sign-in check runs this on every call.
TOKEN_HOLDER = (
    select(User.id, User.username, ApiToken.id.label("token_id"), ApiToken.last_used_at)
    .join(ApiToken, ApiToken.user_id == User.id)
    .where(ApiToken.token_hash == bindparam("digest"), ApiToken.revoked_at.is_(None))
)
TOUCH_TOKEN = update(ApiToken).where(ApiToken.id == bindparam("token")).values(last_used_at=bindparam("now"))


def token_holder(plain: str) -> TokenHolder | None:
    """``user_for_token`` for the API: the user and token ids, in one Core statement.

    Run on the session's connection, not through ``Session.execute``: a statement of mapped columns
    would go through the ORM's execution path, a third of this check's CPU, for plain values."""
    row = db.session.connection().execute(TOKEN_HOLDER, {"digest": token_digest(plain)}).first()
    return TokenHolder(*row) if row else None


def touch_token(token_id: int, now: datetime) -> None:
    db.session.connection().execute(TOUCH_TOKEN, {"token": token_id, "now": now})


def revoke_token(token: ApiToken, username: str | None = None) -> None:
    token.revoked_at = utcnow()
    db.session.commit()
    system_log.record("token.revoked", actor=username, subject=token.name, details={"token_id": token.id})
