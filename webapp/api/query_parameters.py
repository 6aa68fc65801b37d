"""Strict parsing of query parameters: a bad value is a 400 that names the parameter."""

from __future__ import annotations

import re

from flask import request

from webapp import errors

DIGITS = re.compile(r"[0-9]{1,20}")
DECIMAL = re.compile(r"[0-9]{1,6}(\.[0-9]{0,6})?|\.[0-9]{1,6}")
MAX_WAIT_SECONDS = 30


def _bad(name: str, message: str):
    return errors.InvalidRequest(message, details={"parameter": name, "value": request.args.get(name)})


def integer(name: str, default: int | None, low: int, high: int) -> int | None:
    """An integer query parameter in ``low..high``, or ``default`` when absent."""
    value = request.args.get(name)
    if value is None:
        return default
    if not DIGITS.fullmatch(value) or not low <= int(value) <= high:
        raise _bad(name, f"{name} must be an integer from {low} to {high}.")
    return int(value)


def wait_seconds() -> float:
    """``?wait=`` as seconds from 0 to 30 (fractions allowed); 0 when absent."""
    value = request.args.get("wait")
    if value is None:
        return 0.0
    if not DECIMAL.fullmatch(value) or float(value) > MAX_WAIT_SECONDS:
        raise _bad("wait", f"wait must be a number of seconds from 0 to {MAX_WAIT_SECONDS}.")
    return float(value)


def text(name: str, max_length: int = 200) -> str | None:
    """A free-text filter; empty means absent. NUL characters would not reach the database."""
    value = request.args.get(name) or None
    if value is not None and (len(value) > max_length or "\x00" in value):
        raise _bad(name, f"{name} must be at most {max_length} characters, without NUL.")
    return value
