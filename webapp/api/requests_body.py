"""Reading an API call's JSON body: media type, size limit, syntax, shape."""

from __future__ import annotations

import json

from flask import current_app, request

from webapp import errors, strict_json

READ_CHUNK = 65536


def json_object(required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """The body as a JSON object with the ``required`` fields and no others than ``optional``."""
    body = json_body()
    if not isinstance(body, dict):
        raise errors.InvalidRequest("The body must be a JSON object.", details={"fields": {"": "must be an object"}})
    problems = {name: "required field" for name in required if name not in body}
    problems.update({name: "unknown field" for name in body if name not in required and name not in optional})
    if problems:
        raise errors.InvalidRequest(
            f"The body must be an object with the fields {', '.join(required)}"
            + (f" and optionally {', '.join(optional)}." if optional else "."),
            details={"fields": problems},
        )
    return body


def json_body():
    """The parsed JSON body; 413 over ``LANES_MAX_BODY``, 415 if not JSON, 400 if malformed."""
    limit = current_app.config["LANES_MAX_BODY"]
    too_large = errors.PayloadTooLarge(f"The body may have at most {limit} bytes.", details={"limit": limit})
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    if not request.is_json:
        raise errors.UnsupportedMediaType(details={"content_type": request.content_type})
    raw = read_at_most(limit + 1)  # the Content-Length may be absent (chunked) or wrong
    if len(raw) > limit:
        raise too_large
    if not raw.strip():
        raise errors.InvalidJson("The body is empty; a JSON object is required.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as problem:
        raise errors.InvalidJson("The body is not valid UTF-8.", details={"position": problem.start}) from None
    try:
        return strict_json.loads(text)
    except json.JSONDecodeError as problem:
        raise errors.InvalidJson(
            f"The body is not valid JSON: {problem.msg} (line {problem.lineno}, column {problem.colno}).",
            details={"line": problem.lineno, "column": problem.colno},
        ) from None
    except (ValueError, RecursionError) as problem:
        # Numbers with thousands of digits, NaN/Infinity, unpaired surrogates, nesting deeper than the parser allows.
        raise errors.InvalidJson(f"The body is not acceptable JSON: {problem}.") from None


def read_at_most(size: int) -> bytes:
    stream, chunks, total = request.stream, [], 0
    while total < size:
        chunk = stream.read(min(READ_CHUNK, size - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)

