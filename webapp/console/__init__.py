"""The browser console: submit form, live lane, request pages, history, API token settings."""

from flask import Flask


def init_app(app: Flask) -> None:
    from webapp.console import display, routes, tokens

    app.register_blueprint(routes.bp)
    app.register_blueprint(tokens.bp)
    display.init_app(app)
