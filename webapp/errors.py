"""The failures a client can see, one type each, and the one place that renders them."""

from __future__ import annotations

import logging

import redis
import sqlalchemy.exc
from flask import Flask, g, jsonify, make_response, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, SecurityError

from webapp.extensions import login_manager

log = logging.getLogger(__name__)


class LanesError(Exception):
    """Base of client-visible errors: a status, a snake_case code, a message, details."""

    status = 400
    code = "invalid_request"
    message = "The request is invalid."

    def __init__(self, message: str | None = None, details: dict | None = None, headers: dict | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details or {}
        self.headers = headers or {}


class InvalidJson(LanesError):
    code, message = "invalid_json", "The body is not valid JSON."


class InvalidRequest(LanesError):
    code = "invalid_request"


class Unauthorized(LanesError):
    status, code, message = 401, "unauthorized", "A valid bearer token is required."


class InvalidCredentials(LanesError):
    status, code, message = 401, "invalid_credentials", "Wrong username or password."


class Forbidden(LanesError):
    status, code, message = 403, "forbidden", "You are not allowed to do this."


class NotFound(LanesError):
    status, code, message = 404, "not_found", "Not found."


class MethodNotAllowed(LanesError):
    status, code, message = 405, "method_not_allowed", "Method not allowed."


class NotCancelable(LanesError):
    status, code, message = 409, "not_cancelable", "This request can no longer be canceled."


class IdempotencyConflict(LanesError):
    status, code = 409, "idempotency_conflict"
    message = "This Idempotency-Key was already used with a different request."


class PayloadTooLarge(LanesError):
    status, code, message = 413, "payload_too_large", "The body is too large."


class UnsupportedMediaType(LanesError):
    status, code, message = 415, "unsupported_media_type", "The body must be JSON (Content-Type: application/json)."


class UnknownJobType(LanesError):
    status, code, message = 422, "unknown_job_type", "Unknown job type."


class InvalidPayload(LanesError):
    status, code, message = 422, "invalid_payload", "The payload does not match the job type's schema."


class LaneFull(LanesError):
    status, code, message = 429, "lane_full", "Your lane has too many pending requests."


class RateLimited(LanesError):
    status, code, message = 429, "rate_limited", "Too many requests; slow down."


class ServiceUnavailable(LanesError):
    status, code, message = 503, "service_unavailable", "A backing service is unavailable; nothing was done."


# The codes a failed request carries in its ``error`` (its job's or the lane worker's verdict):
# not HTTP errors, but part of the API's vocabulary, so they are listed here with the others.
JOB_FAILURE_CODES = ("insufficient_funds", "worker_lost", "timeout", "job_error")


def client_error_types() -> list[type[LanesError]]:
    """Every error type a client can get, in definition order (the OpenAPI document lists their codes)."""
    found: list[type[LanesError]] = []
    pending = list(LanesError.__subclasses__())
    while pending:
        error_type = pending.pop(0)
        found.append(error_type)
        pending.extend(error_type.__subclasses__())
    return found


_HTTP_CODES = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 408: "invalid_request", 413: "payload_too_large", 415: "unsupported_media_type",
    429: "rate_limited", 503: "service_unavailable",
}
# sqlalchemy.exc.TimeoutError: no pooled connection came free within pool_timeout.
UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
               sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError)


def wants_json() -> bool:
    """API clients (and scripts fetching downloads with a token) get JSON errors; browsers get pages."""
    if request.path.startswith("/api/"):
        return True
    return request.path.startswith("/downloads/") and "Authorization" in request.headers


def error_response(error: LanesError):
    body = {"error": {"code": error.code, "message": error.message, "details": error.details}}
    if wants_json():
        response = jsonify(body)
    else:
        if error.status >= 500 and "_login_user" not in g:
            # The page shows who is signed in; don't reload the user from a database that just failed.
            g._login_user = login_manager.anonymous_user()
        response = make_response(render_template("error.html", error=error))
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(LanesError)
    def handle_lanes_error(error: LanesError):
        return error_response(error)

    @app.errorhandler(CSRFError)
    def handle_csrf(error: CSRFError):
        return error_response(InvalidRequest("The form expired or is missing its CSRF token; reload and try again."))

    @app.errorhandler(HTTPException)
    def handle_http(error: HTTPException):
        if error.code is not None and error.code < 400:  # routing redirects (e.g. a missing trailing slash)
            return error.get_response()
        if isinstance(error, SecurityError):
            # A Host outside TRUSTED_HOSTS: no URL can be built for it, so no page either.
            message = "This host name is not served here."
            return jsonify(error={"code": "invalid_request", "message": message, "details": {}}), 400
        lanes_error = LanesError(error.description)
        lanes_error.status = error.code or 500
        lanes_error.code = _HTTP_CODES.get(lanes_error.status, "invalid_request")
        response = error_response(lanes_error)
        if error.code == 405 and getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    def handle_unavailable(error: Exception):
        log.warning("backing service unavailable: %s", error)
        _rollback()
        return error_response(ServiceUnavailable(headers={"Retry-After": "5"}))

    for exception_class in UNAVAILABLE:
        app.register_error_handler(exception_class, handle_unavailable)

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        _rollback()
        lanes_error = LanesError("Something went wrong on our side; it has been logged.")
        lanes_error.status, lanes_error.code = 500, "internal_error"
        return error_response(lanes_error)


def _rollback() -> None:
    from webapp.extensions import db

    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the database may be the thing that is down
        log.debug("rollback after failure did not succeed", exc_info=True)
