"""Extensions, created here unbound and bound to the app in ``create_app``."""

from __future__ import annotations

import hashlib

import redis
from flask import Flask, current_app
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase

from webapp.redis_client import redis_client


class Base(DeclarativeBase):
    pass


# Rows keep their loaded values after a commit: the code re-reads (refresh, RETURNING) where it
# needs the database's word, instead of paying a SELECT for every attribute touched after commit.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
socketio = SocketIO()


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record):
    """SQLite with web and workers writing at once needs WAL and foreign keys."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def socketio_channel(app_config) -> str:
    """The pub/sub channel of this deployment (pub/sub ignores the Redis database number)."""
    if app_config["LANES_SOCKETIO_CHANNEL"]:
        return app_config["LANES_SOCKETIO_CHANNEL"]
    digest = hashlib.sha256(app_config["REDIS_URL"].encode()).hexdigest()[:12]
    return f"lanes-socketio-{digest}"


class RedisBinding:
    """The app's Redis client (one connection pool per process; follows a Sentinel failover)."""

    def init_app(self, app: Flask) -> None:
        app.extensions["lanes_redis"] = redis_client(
            app.config["REDIS_URL"], socket_timeout=40, socket_connect_timeout=5, health_check_interval=30
        )

    @property
    def client(self) -> redis.Redis:
        return current_app.extensions["lanes_redis"]


redis_binding = RedisBinding()


def get_redis() -> redis.Redis:
    """The current app's Redis client."""
    return redis_binding.client
