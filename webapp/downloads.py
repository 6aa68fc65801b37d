"""``GET /downloads/<request id>``: a report export, served to its owner only.

The owner is known by the browser session or by ``Authorization: Bearer <token>`` (scripts).
Another user's file answers 404, like an unknown one, so ids reveal nothing.
"""

from __future__ import annotations

import io

from flask import Blueprint, Flask, request, send_file
from flask_login import current_user
from sqlalchemy import select

from webapp import errors
from webapp.auth.accounts import user_for_token
from webapp.extensions import db, login_manager
from webapp.models import ExportFile, User

bp = Blueprint("downloads", __name__, url_prefix="/downloads")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.get("/<id:request_id>")
def download(request_id: int):
    user = _requesting_user()
    if user is None:
        # Scripts that sent a bearer token get JSON (errors.wants_json); browsers go to sign in.
        if "Authorization" in request.headers:
            raise errors.Unauthorized()
        return login_manager.unauthorized()
    export_file = db.session.scalar(
        select(ExportFile).where(ExportFile.request_id == request_id, ExportFile.user_id == user.id)
    )
    if export_file is None:
        raise errors.NotFound("No such download.")
    response = send_file(
        io.BytesIO(export_file.content),
        mimetype=export_file.content_type,
        as_attachment=True,
        download_name=export_file.filename,
        last_modified=export_file.created_at,
    )
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _requesting_user() -> User | None:
    """The user named by a bearer token when one is sent, else the signed-in browser user."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        found = user_for_token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        return found[0] if found else None
    return current_user if current_user.is_authenticated else None
