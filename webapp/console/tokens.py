"""``/settings/tokens``: a user's API tokens (create, shown once; revoke)."""

from __future__ import annotations

from flask import Blueprint, flash, make_response, redirect, render_template, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from webapp import errors
from webapp.auth.accounts import issue_token, revoke_token
from webapp.console.forms import TokenForm
from webapp.extensions import db
from webapp.models import ApiToken

bp = Blueprint("tokens", __name__, url_prefix="/settings/tokens")


@bp.get("")
@login_required
def index():
    return render_tokens(TokenForm())


@bp.post("")
@login_required
def create():
    form = TokenForm()
    if not form.validate_on_submit():
        return render_tokens(form, status=400)
    token, plain = issue_token(current_user, form.name.data.strip())
    # The plain token exists only in this response: never in a flash or the session, never cached.
    response = render_tokens(TokenForm(formdata=None), new_token=token, plain=plain)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/<id:token_id>/revoke")
@login_required
def revoke(token_id: int):
    token = db.session.get(ApiToken, token_id)
    if token is None or token.user_id != current_user.id:
        raise errors.NotFound("No such token.")
    if token.revoked_at is not None:
        flash(f"The token {token.name!r} was already revoked.", "info")
    else:
        revoke_token(token)
        flash(f"The token {token.name!r} is revoked; scripts using it are refused from now on.", "success")
    return redirect(url_for("tokens.index"))


def render_tokens(form: TokenForm, status: int = 200, new_token: ApiToken | None = None, plain: str | None = None):
    tokens = db.session.scalars(
        select(ApiToken).where(ApiToken.user_id == current_user.id).order_by(ApiToken.id.desc())
    ).all()
    html = render_template("settings/tokens.html", form=form, tokens=tokens, new_token=new_token, plain=plain)
    return make_response(html, status)
