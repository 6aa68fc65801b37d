"""Accounts: creating users, checking credentials (with failed-login throttling), API tokens."""

from __future__ import annotations

import hashlib
import re
import secrets

from sqlalchemy import select

from webapp import errors
from webapp.auth.passwords import burn_time_like_a_check, hash_password, verify_password
from webapp.extensions import db
from webapp.models import ApiToken, User, utcnow
from webapp.rate_limits import rate_limits

USERNAME_RE = re.compile(r"^[a-z0-9_.-]{3,32}$")
MIN_PASSWORD_LENGTH = 8
MAX_TOKEN_NAME = 100
TOKEN_PREFIX = "lanes_"


class AccountError(ValueError):
    """A user-facing problem with a username or password."""


def validate_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        raise AccountError("User names are 3 to 32 characters of a-z, 0-9, '_', '.' and '-'.")
    return username


def validate_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > 1024:
        raise AccountError("Passwords may have at most 1024 characters.")
    return password


def create_user(username: str, password: str, is_admin: bool = False) -> User:
    validate_username(username)
    validate_password(password)
    if db.session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AccountError(f"The user name {username!r} is taken.")
    user = User(username=username, password_hash=hash_password(password), is_admin=is_admin)
    db.session.add(user)
    db.session.commit()
    return user


def find_user(username: str) -> User | None:
    """The user of this name; None for a name no user can have (never looked up: NUL, say)."""
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        return None
    return db.session.scalar(select(User).where(User.username == username))


def authenticate(username: str, password: str, address: str) -> User:
    """The user with these credentials, or ``InvalidCredentials``; ``RateLimited`` while throttled.

    Only failures count against the limits, and while throttled even a right password fails.
    """
    account_key, address_key = f"user:{str(username)[:64]}", f"addr:{address}"
    if not rate_limits.allowed("login_account", account_key) or not rate_limits.allowed(
        "login_address", address_key
    ):
        retry = max(
            rate_limits.retry_after("login_account", account_key),
            rate_limits.retry_after("login_address", address_key),
        )
        raise errors.RateLimited(
            "Too many failed sign-ins; try again later.", details={"retry_after": retry},
            headers={"Retry-After": str(retry)},
        )
    user = find_user(username)
    if user is None:
        burn_time_like_a_check(str(password))
    if user is None or not isinstance(password, str) or not verify_password(user.password_hash, password):
        rate_limits.hit("login_account", account_key)
        rate_limits.hit("login_address", address_key)
        raise errors.InvalidCredentials()
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
    return token, plain


def user_for_token(plain: str) -> tuple[User, ApiToken] | None:
    row = db.session.execute(
        select(User, ApiToken)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == token_digest(plain), ApiToken.revoked_at.is_(None))
    ).first()
    return (row[0], row[1]) if row else None


def revoke_token(token: ApiToken) -> None:
    token.revoked_at = utcnow()
    db.session.commit()
