"""Response headers that tell browsers what this site allows: no inline script, no framing, no sniffing.

Every script and style is a file under ``webapp/static/`` (no inline ``<script>`` or ``style=``),
so the Content-Security-Policy can refuse everything else; Socket.IO connects back to this origin.
HSTS is sent only when cookies are ``Secure`` (``LANES_SECURE_COOKIES``), i.e. behind HTTPS.
"""

from __future__ import annotations

from flask import Flask, request

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
# rq-dashboard (admins only, third-party templates) is built on inline scripts: its pages alone
# allow them. Everything else about the policy stays.
DASHBOARD_POLICY = CONTENT_SECURITY_POLICY.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")
HSTS = "max-age=31536000; includeSubDomains"


def init_app(app: Flask) -> None:
    secure = app.config["SESSION_COOKIE_SECURE"]

    @app.after_request
    def add_security_headers(response):
        headers = response.headers
        dashboard = request.blueprint == "rq_dashboard"
        headers.setdefault("Content-Security-Policy", DASHBOARD_POLICY if dashboard else CONTENT_SECURITY_POLICY)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        if secure:
            headers.setdefault("Strict-Transport-Security", HSTS)
        return response
