"""The client's address: the peer's, or the one that ``LANES_TRUSTED_PROXIES`` trusted proxies report.

Werkzeug's ProxyFix does the reading: it takes the address the nearest trusted proxy appended to
``X-Forwarded-For`` (and the scheme from ``X-Forwarded-Proto``), so a client cannot pick its own
address by sending the header itself. With no trusted proxy the headers are ignored.
"""

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix


def trust_proxies(app: Flask) -> None:
    """Wrap the whole app (Socket.IO included) so that ``request.remote_addr`` is the client's."""
    hops = app.config["LANES_TRUSTED_PROXIES"]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)


def client_address() -> str:
    """The address rate limits and the system log know the client by."""
    return request.remote_addr or "unknown"
