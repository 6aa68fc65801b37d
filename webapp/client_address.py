"""The client's address, honouring ``X-Forwarded-For`` only from trusted proxies."""

from flask import current_app, request


def client_address() -> str:
    hops = current_app.config["LANES_TRUSTED_PROXIES"]
    if hops:
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.remote_addr or "unknown"
