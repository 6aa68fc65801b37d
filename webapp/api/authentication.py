"""Bearer-token authentication of API calls: ``Authorization: Bearer <token>`` → ``g.api_user``
(a ``TokenHolder``: the user's ``id`` and ``username``, and the ``token_id``).

Session cookies never authenticate the API: a script must hold a token.
"""

from __future__ import annotations

from datetime import timedelta

from flask import current_app, g, request

from webapp import errors
from webapp.auth.accounts import token_holder, touch_token
from webapp.extensions import db
from webapp.models import utcnow

# Writing ``last_used_at`` on every call would turn each read into a write; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_TOKEN_LENGTH = 512


def public(view):
    """Mark an API view as callable without a token."""
    view.api_public = True
    return view


def authenticate_request() -> None:
    """Before every API view: set ``g.api_user`` from the bearer token, or 401."""
    view = current_app.view_functions.get(request.endpoint)
    if view is None or getattr(view, "api_public", False):
        return
    plain = bearer_token()
    if plain:
        # One SELECT (and once a minute one UPDATE) needs no transaction: outside one it is one round
        # trip, instead of BEGIN, SELECT and COMMIT. The connection goes back to the pool as it ends.
        db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    found = token_holder(plain) if plain else None
    if found is None:
        message = "This token is invalid or revoked." if plain else "Send an Authorization: Bearer <token> header."
        raise errors.Unauthorized(message, headers={"WWW-Authenticate": 'Bearer realm="lanes"'})
    g.api_user = found
    now = utcnow()
    if found.last_used_at is None or now - found.last_used_at > LAST_USED_RESOLUTION:
        touch_token(found.token_id, now)
    # Always end the transaction: no call holds a pooled connection while it reads its body or waits.
    db.session.commit()


def bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    return token
