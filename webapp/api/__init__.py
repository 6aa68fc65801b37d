"""The JSON API v1 (SPEC §5), mounted at ``/api/v1`` and authenticated by bearer tokens."""

from flask import Flask


def init_app(app: Flask) -> None:
    from webapp.api.routes import bp
    from webapp.extensions import csrf

    # Bearer tokens are not sent by browsers on their own, so CSRF cannot forge an API call.
    csrf.exempt(bp)
    app.register_blueprint(bp)
