"""One place for configuration: every setting is read from the environment here."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = Path(os.environ.get("LANES_INSTANCE_DIR", PROJECT_ROOT / "instance"))


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def instance_secret_key(instance_dir: Path) -> str:
    """Return the secret key kept in ``instance/secret_key``, creating it once."""
    path = instance_dir / "secret_key"
    instance_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return path.read_text().strip()


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here, whatever SQLAlchemy's default driver is."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


POOLERS = {"", "transaction"}  # LANES_DB_POOLER: none, or a transaction-mode pooler


class Config:
    """Settings for web and worker processes, read from the environment at creation."""

    def __init__(self, **overrides):
        env = os.environ
        self.INSTANCE_DIR = Path(overrides.pop("INSTANCE_DIR", INSTANCE_DIR))
        self.SECRET_KEY = env.get("SECRET_KEY") or None
        self.SQLALCHEMY_DATABASE_URI = sqlalchemy_url(
            env.get("DATABASE_URL") or f"sqlite:///{self.INSTANCE_DIR / 'lanes.db'}"
        )
        self.REDIS_URL = env.get("REDIS_URL") or ""
        # A request that cannot get a connection within pool_timeout gets a 503 with Retry-After.
        # The pool keeps every connection it opens (no overflow): with SQLAlchemy's default 5 + 10
        # overflow, 16 clients at once made the web process open and close a PostgreSQL connection
        # every third submit. A process that never needs more than one (a lane worker) opens one.
        self.SQLALCHEMY_ENGINE_OPTIONS = {
            "pool_timeout": _int("LANES_DB_POOL_TIMEOUT", 10),
            "pool_size": _int("LANES_DB_POOL_SIZE", 15), "max_overflow": 0,
        }
        # Test pooled connections before use (webapp/db_ping.py, installed by create_app). worker.py
        # turns it off: a lane worker checks a connection out twice per job, and it retries whatever
        # a dead connection failed (SQLAlchemy then discards the whole pool), so a ping would only
        # cost it a round trip each time.
        self.LANES_DB_PRE_PING = True
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.SESSION_COOKIE_SECURE = _bool("LANES_SECURE_COOKIES", False)
        self.REMEMBER_COOKIE_SECURE = self.SESSION_COOKIE_SECURE
        self.WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the session
        self.LANES_MAX_BODY = _int("LANES_MAX_BODY", 65536)
        # Every route: no body over LANES_MAX_BODY is read (413); forms get the same memory cap.
        # (+1: the API reads one byte past its limit to tell "exactly the limit" from "over it".)
        self.MAX_CONTENT_LENGTH = self.LANES_MAX_BODY + 1
        self.MAX_FORM_MEMORY_SIZE = self.LANES_MAX_BODY
        self.MAX_FORM_PARTS = 200
        # A body must arrive within this many seconds of its headers (408 otherwise).
        self.LANES_BODY_SECONDS = _int("LANES_BODY_SECONDS", 10)
        # Allowed Host headers (comma-separated; "none" set = any host), Flask's TRUSTED_HOSTS.
        self.TRUSTED_HOSTS = [h.strip() for h in env.get("LANES_TRUSTED_HOSTS", "").split(",") if h.strip()] or None

        self.LANES_IDLE_SECONDS = _int("LANES_IDLE_SECONDS", 10)
        self.LANES_MAX_WORKERS = _int("LANES_MAX_WORKERS", 32)
        self.LANES_FAIR_SHARE = _int("LANES_FAIR_SHARE", 10)
        self.LANES_LEASE_SECONDS = _int("LANES_LEASE_SECONDS", 15)
        self.LANES_RECONCILE_SECONDS = _int("LANES_RECONCILE_SECONDS", 10)
        self.LANES_SHUTDOWN_SECONDS = _int("LANES_SHUTDOWN_SECONDS", 30)
        self.LANES_MAX_ATTEMPTS = _int("LANES_MAX_ATTEMPTS", 3)
        self.LANES_MAX_PENDING = _int("LANES_MAX_PENDING", 1000)
        self.LANES_SESSION_IDLE_MINUTES = _int("LANES_SESSION_IDLE_MINUTES", 120)
        self.LANES_SUBMIT_RATE = env.get("LANES_SUBMIT_RATE", "600/minute")
        self.LANES_LOGIN_RATE_ACCOUNT = env.get("LANES_LOGIN_RATE_ACCOUNT", "10/15minutes")
        self.LANES_LOGIN_RATE_ADDRESS = env.get("LANES_LOGIN_RATE_ADDRESS", "100/15minutes")
        self.LANES_WORKER_METRICS_PORT = _int("LANES_WORKER_METRICS_PORT", 9101)
        self.LANES_ALLOW_SIGNUP = _bool("LANES_ALLOW_SIGNUP", False)
        self.LANES_MIN_PASSWORD_LENGTH = _int("LANES_MIN_PASSWORD_LENGTH", 12)
        self.LANES_SIGNUP_RATE = env.get("LANES_SIGNUP_RATE", "10/hour")  # sign-ups per address
        # Long-polls (?wait=) one user may hold open at once in one web process (then 429).
        self.LANES_MAX_LONG_POLLS = _int("LANES_MAX_LONG_POLLS", 10)
        # Argon2 checks running at once per web process (each takes LANES_ARGON2_MEMORY_KIB), and how
        # long a sign-in may wait for a turn before it gets 503 with Retry-After.
        # Default: half the cores (at least one), so a sign-in flood leaves the rest to everyone else.
        self.LANES_PASSWORD_CHECKS = _int("LANES_PASSWORD_CHECKS", max(1, (os.cpu_count() or 1) // 2))
        self.LANES_PASSWORD_CHECK_WAIT = _int("LANES_PASSWORD_CHECK_WAIT", 10)
        self.LANES_EVENT_RETENTION_DAYS = _int("LANES_EVENT_RETENTION_DAYS", 90)
        self.LANES_EXPORT_TTL_DAYS = _int("LANES_EXPORT_TTL_DAYS", 7)
        self.LANES_EXPORT_QUOTA_BYTES = _int("LANES_EXPORT_QUOTA_BYTES", 50 * 1024 * 1024)
        self.LANES_METRICS_TOKEN = env.get("LANES_METRICS_TOKEN") or None
        # Redis pub/sub ignores the database number, so the Socket.IO channel must be
        # unique per deployment sharing one Redis server.
        self.LANES_SOCKETIO_CHANNEL = env.get("LANES_SOCKETIO_CHANNEL", "")
        # Argon2id cost; tests lower it so that hundreds of logins stay fast.
        self.LANES_ARGON2_MEMORY_KIB = _int("LANES_ARGON2_MEMORY_KIB", 65536)
        self.LANES_ARGON2_TIME_COST = _int("LANES_ARGON2_TIME_COST", 3)
        # Trust one proxy's X-Forwarded-For (set when running behind a load balancer).
        self.LANES_TRUSTED_PROXIES = _int("LANES_TRUSTED_PROXIES", 0)
        # Where operators' Grafana is (the /admin page links to it); unset = no link.
        self.LANES_GRAFANA_URL = env.get("LANES_GRAFANA_URL", "")
        # "transaction": DATABASE_URL is a pooler in transaction mode (PgBouncer pool_mode=transaction).
        self.LANES_DB_POOLER = env.get("LANES_DB_POOLER", "").strip().lower()

        for key, value in overrides.items():
            setattr(self, key, value)
        if "MAX_CONTENT_LENGTH" not in overrides:
            self.MAX_CONTENT_LENGTH, self.MAX_FORM_MEMORY_SIZE = self.LANES_MAX_BODY + 1, self.LANES_MAX_BODY
        if not self.SECRET_KEY:
            self.SECRET_KEY = instance_secret_key(self.INSTANCE_DIR)
        self.SQLALCHEMY_DATABASE_URI = sqlalchemy_url(self.SQLALCHEMY_DATABASE_URI)
        if self.SQLALCHEMY_DATABASE_URI.startswith("sqlite"):
            # Web and workers write at once: WAL and a busy timeout (see extensions).
            self.SQLALCHEMY_ENGINE_OPTIONS = {"connect_args": {"timeout": 30}}
        if not self.REDIS_URL:
            self.REDIS_URL = f"unix://{self.INSTANCE_DIR / 'redis.sock'}"
        if self.LANES_DB_POOLER not in POOLERS:
            raise ValueError(f"LANES_DB_POOLER={self.LANES_DB_POOLER!r}: use one of {sorted(POOLERS)}")
        if self.LANES_DB_POOLER == "transaction" and self.SQLALCHEMY_DATABASE_URI.startswith("postgresql"):
            # Between transactions the server connection is another client's: psycopg must not
            # prepare statements (it does after 5 runs of one query), as PgBouncer before 1.21
            # cannot carry them over. Lanes uses nothing session-scoped (SET, LISTEN, advisory
            # session locks), so the rest works as it is.
            self.SQLALCHEMY_ENGINE_OPTIONS = {**self.SQLALCHEMY_ENGINE_OPTIONS,
                                              "connect_args": {"prepare_threshold": None}}
