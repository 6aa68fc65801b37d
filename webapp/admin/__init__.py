"""Operations pages for admins: ``/admin`` and rq-dashboard at ``/admin/rq``."""

from flask import Flask


def init_app(app: Flask) -> None:
    from webapp.admin.dashboard import mount_rq_dashboard
    from webapp.admin.routes import bp

    app.register_blueprint(bp)
    mount_rq_dashboard(app)
