"""The OpenAPI 3.1 document of API v1, built from the routes' contract and the job catalogue."""

from __future__ import annotations

from jobs.registry import all_job_types
from webapp import errors
from webapp.api.query_parameters import MAX_WAIT_SECONDS
from webapp.lanes.request_logs import MAX_LINE_LENGTH, MAX_LINES
from webapp.models import STATUSES

# Codes come from the error types themselves (webapp/errors.py): no second list to keep in step.
ERROR_CODES = list(dict.fromkeys(error_type.code for error_type in errors.client_error_types()))
FAILURE_CODES = list(errors.JOB_FAILURE_CODES)
# Each error response of the document: the error types it stands for, and when they happen.
ERROR_RESPONSES = {
    "BadRequest": ((errors.InvalidJson, errors.InvalidRequest), "a bad body, header or query parameter"),
    "Unauthorized": ((errors.Unauthorized,), "no, an invalid or a revoked bearer token"),
    "InvalidCredentials": ((errors.InvalidCredentials,), "wrong user name or password"),
    "Forbidden": ((errors.Forbidden,), "not allowed"),
    "NotFound": ((errors.NotFound,), "no such request, or not yours"),
    "MethodNotAllowed": ((errors.MethodNotAllowed,), "the path does not take this method"),
    "Conflict": ((errors.NotCancelable, errors.IdempotencyConflict), "the request's state or key forbids it"),
    "PayloadTooLarge": ((errors.PayloadTooLarge,), "the body is over the server's limit"),
    "UnsupportedMediaType": ((errors.UnsupportedMediaType,), "the body must be application/json"),
    "UnprocessableEntity": (
        (errors.UnknownJobType, errors.InvalidPayload),
        "the job type or its payload is refused (details name the fields)",
    ),
    "TooManyRequests": ((errors.LaneFull, errors.RateLimited), "wait for Retry-After seconds"),
    "ServiceUnavailable": ((errors.ServiceUnavailable,), "the database or Redis is down; nothing was done"),
}
RETRY_AFTER_RESPONSES = {"TooManyRequests", "ServiceUnavailable"}
TIMESTAMP = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC"}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def error(description: str) -> dict:
    return {"$ref": f"#/components/responses/{description}"}


def openapi_document() -> dict:
    """The whole document; each job type's payload schema is a component, submissions a oneOf of them."""
    job_types = all_job_types()
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Lanes API",
            "version": "1",
            "description": (
                "Every user has a private FIFO lane: requests run one at a time, in the order submitted. "
                "Errors are always `{\"error\": {\"code\", \"message\", \"details\"}}`. "
                "Live events (Socket.IO) and the job types are described in the repository's docs/api.md."
            ),
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearerAuth": []}],
        "paths": _with_unavailable(_paths()),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http", "scheme": "bearer",
                    "description": "A token from POST /tokens or the Settings → API tokens page.",
                },
            },
            "schemas": {**_schemas(), **_job_schemas(job_types)},
            "parameters": _parameters(),
            "headers": {
                "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}},
            },
            "responses": _error_responses(),
        },
    }


def _paths() -> dict:
    request_object = json_content(ref("Request"))
    return {
        "/tokens": {
            "post": {
                "operationId": "createToken", "summary": "Exchange a user name and password for an API token",
                "security": [],
                "requestBody": {"required": True, **json_content(ref("TokenCreate"))},
                "responses": {
                    "201": {"description": "The token, shown only this once.", **json_content(ref("TokenCreated"))},
                    "400": error("BadRequest"), "401": error("InvalidCredentials"), "413": error("PayloadTooLarge"),
                    "415": error("UnsupportedMediaType"), "429": error("TooManyRequests"),
                    "503": error("ServiceUnavailable"),
                },
            },
        },
        "/tokens/current": {
            "delete": {
                "operationId": "revokeCurrentToken", "summary": "Revoke the token making this call",
                "responses": {"204": {"description": "Revoked."}, "401": error("Unauthorized")},
            },
        },
        "/job-types": {
            "get": {
                "operationId": "listJobTypes", "summary": "The job types this server runs",
                "responses": {
                    "200": {"description": "The catalogue.", **json_content(ref("JobTypeList"))},
                    "401": error("Unauthorized"),
                },
            },
        },
        "/requests": {
            "post": {
                "operationId": "submitRequest", "summary": "Submit a request to the back of your lane",
                "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
                "requestBody": {"required": True, **json_content(ref("Submission"))},
                "responses": {
                    "202": {
                        "description": "Queued.",
                        "headers": {"Location": {"description": "The request's URL.", "schema": {"type": "string"}}},
                        **request_object,
                    },
                    "200": {"description": "An Idempotency-Key replay: the earlier request.", **request_object},
                    "400": error("BadRequest"), "401": error("Unauthorized"), "409": error("Conflict"),
                    "413": error("PayloadTooLarge"), "415": error("UnsupportedMediaType"),
                    "422": error("UnprocessableEntity"), "429": error("TooManyRequests"),
                    "503": error("ServiceUnavailable"),
                },
            },
            "get": {
                "operationId": "listRequests", "summary": "Your requests, newest first",
                "parameters": [
                    {"$ref": f"#/components/parameters/{name}"} for name in ("Status", "Type", "Limit", "Before")
                ],
                "responses": {
                    "200": {"description": "One page.", **json_content(ref("RequestPage"))},
                    "400": error("BadRequest"), "401": error("Unauthorized"),
                },
            },
        },
        "/requests/{id}": {
            "parameters": [{"$ref": "#/components/parameters/RequestId"}],
            "get": {
                "operationId": "getRequest", "summary": "One of your requests, optionally long-polling until it ends",
                "parameters": [{"$ref": "#/components/parameters/Wait"}],
                "responses": {
                    "200": {"description": "The request.", **request_object},
                    "400": error("BadRequest"), "401": error("Unauthorized"), "404": error("NotFound"),
                },
            },
            "delete": {
                "operationId": "cancelRequest", "summary": "Cancel a request",
                "responses": {
                    "200": {"description": "It was queued and is now canceled.", **request_object},
                    "202": {"description": "It is running and was asked to stop; it ends canceled.", **request_object},
                    "401": error("Unauthorized"), "404": error("NotFound"),
                    "409": error("Conflict"),
                },
            },
        },
        "/requests/{id}/rerun": {
            "parameters": [{"$ref": "#/components/parameters/RequestId"}],
            "post": {
                "operationId": "rerunRequest",
                "summary": "Submit a new request with the same type and payload as one of yours",
                "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
                "responses": {
                    "202": {
                        "description": "The new request, queued.",
                        "headers": {
                            "Location": {"description": "The new request's URL.", "schema": {"type": "string"}},
                        },
                        **request_object,
                    },
                    "200": {"description": "An Idempotency-Key replay: the earlier request.", **request_object},
                    "400": error("BadRequest"), "401": error("Unauthorized"), "404": error("NotFound"),
                    "409": error("Conflict"), "422": error("UnprocessableEntity"), "429": error("TooManyRequests"),
                },
            },
        },
        "/requests/{id}/logs": {
            "parameters": [{"$ref": "#/components/parameters/RequestId"}],
            "get": {
                "operationId": "getRequestLog",
                "summary": "The lines the request's job wrote, oldest first",
                "parameters": [{"$ref": "#/components/parameters/LogLimit"}, {"$ref": "#/components/parameters/After"}],
                "responses": {
                    "200": {"description": "One page of the log.", **json_content(ref("LogPage"))},
                    "400": error("BadRequest"), "401": error("Unauthorized"), "404": error("NotFound"),
                },
            },
        },
        "/lane": {
            "get": {
                "operationId": "getLane", "summary": "Your lane: what runs and what waits, in order",
                "responses": {
                    "200": {"description": "The lane (also when empty).", **json_content(ref("Lane"))},
                    "401": error("Unauthorized"),
                },
            },
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi", "summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1.", **json_content({"type": "object"})}},
            },
        },
    }


def _with_unavailable(paths: dict) -> dict:
    """Any operation that touches the database or Redis may answer 503."""
    for item in paths.values():
        for method, operation in item.items():
            if method != "parameters" and operation.get("security") != []:
                operation["responses"].setdefault("503", error("ServiceUnavailable"))
    return paths


def _schemas() -> dict:
    nullable_int = {"type": ["integer", "null"]}
    return {
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {
                "error": {
                    "type": "object", "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string", "enum": ERROR_CODES},
                        "message": {"type": "string"},
                        "details": {"type": "object"},
                    },
                },
            },
        },
        "Request": {
            "type": "object",
            "required": ["id", "type", "payload", "status", "position", "result", "error", "progress", "attempts",
                         "created_at", "started_at", "ended_at"],
            "properties": {
                "id": {"type": "integer"},
                "type": {"type": "string"},
                "payload": {"type": "object"},
                "status": {"type": "string", "enum": list(STATUSES)},
                "position": {**nullable_int, "minimum": 1, "description": "1 = next to run; null unless queued"},
                "result": {"type": ["object", "null"]},
                "error": {
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object", "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "examples": FAILURE_CODES},
                                "message": {"type": "string"},
                            },
                        },
                    ],
                },
                "progress": {**nullable_int, "minimum": 0, "maximum": 100},
                "attempts": {"type": "integer", "minimum": 0},
                "created_at": TIMESTAMP,
                "started_at": {**TIMESTAMP, "type": ["string", "null"]},
                "ended_at": {**TIMESTAMP, "type": ["string", "null"]},
            },
        },
        "RequestPage": {
            "type": "object", "required": ["requests", "next"],
            "properties": {
                "requests": {"type": "array", "items": ref("Request")},
                "next": {**nullable_int, "description": "Pass as `before` for the next page; null on the last."},
            },
        },
        "LogPage": {
            "type": "object", "required": ["lines", "next"],
            "properties": {
                "lines": {
                    "type": "array", "maxItems": MAX_LINES,
                    "items": {
                        "type": "object", "required": ["at", "text"],
                        "properties": {"at": TIMESTAMP, "text": {"type": "string", "maxLength": MAX_LINE_LENGTH}},
                    },
                },
                "next": {
                    **nullable_int,
                    "description": (
                        "Pass as `after` to read on; null once the whole log was read and the request has "
                        "ended (while it runs, more lines may come)."
                    ),
                },
            },
        },
        "Lane": {
            "type": "object", "required": ["name", "length", "running", "pending"],
            "properties": {
                "name": {"type": "string", "examples": ["lane:1"]},
                "length": {"type": "integer", "minimum": 0, "description": "queued + running"},
                "running": nullable_int,
                "pending": {"type": "array", "items": {"type": "integer"}, "description": "queued ids, in order"},
            },
        },
        "JobType": {
            "type": "object", "required": ["name", "title", "schema", "cancelable"],
            "properties": {
                "name": {"type": "string"},
                "title": {"type": "string"},
                "schema": {"type": "object", "description": "JSON Schema of the payload"},
                "cancelable": {"type": "boolean"},
            },
        },
        "JobTypeList": {
            "type": "object", "required": ["job_types"],
            "properties": {"job_types": {"type": "array", "items": ref("JobType")}},
        },
        "TokenCreate": {
            "type": "object", "required": ["username", "password"], "additionalProperties": False,
            "properties": {
                "username": {"type": "string"},
                "password": {"type": "string"},
                "name": {"type": "string", "minLength": 1, "maxLength": 100},
            },
        },
        "TokenCreated": {
            "type": "object", "required": ["token", "id", "name", "created_at"],
            "properties": {
                "token": {"type": "string"}, "id": {"type": "integer"}, "name": {"type": "string"},
                "created_at": TIMESTAMP,
            },
        },
    }


def _job_schemas(job_types) -> dict:
    """``Payload.<type>`` (the job type's own schema) and ``Submission.<type>`` per job type."""
    schemas = {}
    for jt in job_types:
        schemas[f"Payload.{jt.name}"] = jt.schema
        schemas[f"Submission.{jt.name}"] = {
            "type": "object", "title": jt.title, "required": ["type", "payload"], "additionalProperties": False,
            "description": f"{jt.title}; {'cancelable' if jt.cancelable else 'not cancelable'} while running.",
            "properties": {"type": {"const": jt.name}, "payload": ref(f"Payload.{jt.name}")},
        }
    schemas["Submission"] = {
        "oneOf": [ref(f"Submission.{jt.name}") for jt in job_types],
        "discriminator": {
            "propertyName": "type",
            "mapping": {jt.name: f"#/components/schemas/Submission.{jt.name}" for jt in job_types},
        },
    }
    return schemas


def _parameters() -> dict:
    return {
        "RequestId": {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}},
        "Wait": {
            "name": "wait", "in": "query",
            "description": "Long-poll: answer once the request has ended or after this many seconds.",
            "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS, "default": 0},
        },
        "Status": {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)}},
        "Type": {"name": "type", "in": "query", "schema": {"type": "string"}},
        "Limit": {
            "name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
        },
        "Before": {
            "name": "before", "in": "query", "description": "The `next` cursor of the previous page.",
            "schema": {"type": "integer", "minimum": 1},
        },
        "LogLimit": {
            "name": "limit", "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LINES, "default": MAX_LINES},
        },
        "After": {
            "name": "after", "in": "query", "description": "The `next` cursor of the previous page.",
            "schema": {"type": "integer", "minimum": 0},
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key", "in": "header",
            "description": (
                "1 to 255 printable ASCII characters; per user, kept 24 h: the same key with the same "
                "type and payload returns the same request (200), with another body it is a 409."
            ),
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        },
    }


def _error_responses() -> dict:
    """One response per entry of ``ERROR_RESPONSES``; its codes are those of its error types."""
    responses = {}
    for name, (error_types, when) in ERROR_RESPONSES.items():
        codes = [error_type.code for error_type in error_types]
        schema = {
            "allOf": [
                ref("Error"),
                {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
            ],
        }
        body = {"description": f"{' or '.join(f'`{code}`' for code in codes)}: {when}.", **json_content(schema)}
        if name in RETRY_AFTER_RESPONSES:
            body["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
        responses[name] = body
    return responses
