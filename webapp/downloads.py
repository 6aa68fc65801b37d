"""``GET /downloads/<request id>``: a report export, served to its owner only.

The owner is known by the browser session or by ``Authorization: Bearer <token>`` (scripts).
Another user's file answers 404, like an unknown one, so ids reveal nothing, and so does an
export older than ``LANES_EXPORT_TTL_DAYS``. The file is sent in 256 KiB pieces, each read in its
own short transaction: neither the whole file in memory nor a pooled connection held while a
slow client reads.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, request, stream_with_context
from flask_login import current_user
from sqlalchemy import func, select

from webapp import errors
from webapp.auth.accounts import user_for_token
from webapp.extensions import db, login_manager
from webapp.models import ExportFile, User, export_cutoff

PIECE_BYTES = 256 * 1024

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
    found = db.session.execute(
        select(ExportFile.filename, ExportFile.content_type, ExportFile.created_at, func.length(ExportFile.content))
        .where(ExportFile.request_id == request_id, ExportFile.user_id == user.id)
    ).first()
    db.session.commit()  # end the transaction: each piece is read in its own
    if found is None:
        raise errors.NotFound("No such download.")
    filename, content_type, created_at, size = found
    if created_at < export_cutoff(current_app.config["LANES_EXPORT_TTL_DAYS"]):
        raise errors.NotFound("This export has expired; run a new one.")
    response = Response(stream_with_context(_pieces(request_id, size)), mimetype=content_type)
    response.headers["Content-Length"] = str(size)
    response.headers.set("Content-Disposition", "attachment", filename=filename)
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.last_modified = created_at
    return response


def _pieces(request_id: int, size: int):
    for start in range(0, size, PIECE_BYTES):
        piece = db.session.scalar(
            select(func.substr(ExportFile.content, start + 1, PIECE_BYTES)).where(ExportFile.request_id == request_id)
        )
        db.session.commit()
        if piece is None:
            return  # deleted meanwhile: the client sees a short body against its Content-Length
        yield bytes(piece)


def _requesting_user() -> User | None:
    """The user named by a bearer token when one is sent, else the signed-in browser user."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        found = user_for_token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        return found[0] if found else None
    return current_user if current_user.is_authenticated else None
