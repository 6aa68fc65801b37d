"""The API v1 endpoints: they translate HTTP to lane service calls and back."""

from __future__ import annotations

import re

from flask import Blueprint, g, jsonify, render_template, request, url_for

from jobs.registry import all_job_types
from webapp import errors
from webapp.api import query_parameters as query
from webapp.api.authentication import authenticate_request, public
from webapp.api.openapi import openapi_document
from webapp.api.requests_body import json_object
from webapp.auth.accounts import authenticate, issue_token, revoke_token, token_name_problem
from webapp.client_address import client_address
from webapp.extensions import db
from webapp.ids import MAX_ID
from webapp.lanes import request_logs, service
from webapp.lanes.representation import iso, request_object
from webapp.models import STATUSES, ApiToken

bp = Blueprint("api", __name__, url_prefix="/api/v1")
bp.before_request(authenticate_request)

IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")  # printable ASCII, as stored and compared


@bp.post("/tokens")
@public
def create_token():
    body = json_object(required=("username", "password"), optional=("name",))
    problems = {field: "must be a string" for field in ("username", "password") if not isinstance(body[field], str)}
    name = body.get("name")
    if name is not None and (problem := token_name_problem(name)):
        problems["name"] = problem
    if problems:
        raise errors.InvalidRequest("Some fields have the wrong type.", details={"fields": problems})
    user = authenticate(body["username"], body["password"], client_address(), via="api")
    token, plain = issue_token(user, name.strip() if name else "API token")
    return jsonify(token=plain, id=token.id, name=token.name, created_at=iso(token.created_at)), 201


@bp.delete("/tokens/current")
def delete_current_token():
    token = db.session.get(ApiToken, g.api_user.token_id)
    if token is not None:  # None: deleted (with its user) since the sign-in check; nothing left to revoke
        revoke_token(token, g.api_user.username)
    return "", 204


@bp.get("/job-types")
def list_job_types():
    return jsonify(
        job_types=[
            {"name": jt.name, "title": jt.title, "schema": jt.schema, "cancelable": jt.cancelable}
            for jt in all_job_types()
        ]
    )


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise errors.InvalidRequest(
            "Idempotency-Key must be 1 to 255 printable ASCII characters.", details={"header": "Idempotency-Key"}
        )
    return key


def submitted_response(submitted: service.Submitted):
    """202 with the new request (200 for an Idempotency-Key replay), and its address."""
    response = jsonify(request_object(submitted.request, submitted.position))
    response.status_code = 202 if submitted.created else 200
    response.headers["Location"] = url_for("api.get_request", request_id=submitted.request.id)
    return response


@bp.post("/requests")
def submit_request():
    key = idempotency_key()
    body = json_object(required=("type", "payload"))
    return submitted_response(service.submit_request(g.api_user.id, body["type"], body["payload"], idempotency_key=key))


@bp.post("/requests/<request_id>/rerun")
def rerun_request(request_id: str):
    """A new request with the same type and payload as one of the user's requests."""
    key = idempotency_key()
    original = service.get_request(g.api_user.id, request_id)
    return submitted_response(
        service.submit_request(g.api_user.id, original.type, original.payload, idempotency_key=key)
    )


@bp.get("/requests/<request_id>/logs")
def request_log(request_id: str):
    row = service.get_request(g.api_user.id, request_id)
    page = request_logs.read_log(
        row,
        limit=query.integer("limit", request_logs.MAX_LINES, 1, request_logs.MAX_LINES),
        after=query.integer("after", None, 0, MAX_ID),
    )
    return jsonify(lines=page.lines, next=page.next_cursor)


@bp.get("/requests/<request_id>")
def get_request(request_id: str):
    seconds = query.wait_seconds()
    if seconds:
        row = service.wait_for_request(g.api_user.id, request_id, seconds)
    else:
        row = service.get_request(g.api_user.id, request_id)
    return jsonify(request_object(row, service.position_of(row)))


@bp.get("/requests")
def list_requests():
    status = query.text("status")
    if status is not None and status not in STATUSES:
        raise errors.InvalidRequest(
            f"status must be one of {', '.join(STATUSES)}.", details={"parameter": "status", "value": status}
        )
    page = service.list_requests(
        g.api_user.id,
        status=status,
        type_name=query.text("type"),
        limit=query.integer("limit", 50, 1, 200),
        before=query.integer("before", None, 1, MAX_ID),
    )
    return jsonify(
        requests=[request_object(row, page.positions.get(row.id)) for row in page.requests],
        next=page.next_cursor,
    )


@bp.delete("/requests/<request_id>")
def cancel_request(request_id: str):
    row, done = service.cancel_request(g.api_user.id, request_id)
    # done: a queued request is now canceled; otherwise a running job was asked to stop.
    return jsonify(request_object(row)), 200 if done else 202


@bp.get("/lane")
def lane():
    return jsonify(service.lane_state(g.api_user.id))


@bp.get("/openapi.json")
@public
def openapi():
    return jsonify(openapi_document())


@bp.get("/docs")
@public
def docs():
    """The OpenAPI document rendered for people (Swagger UI, served from our static files)."""
    return render_template("api/docs.html")
