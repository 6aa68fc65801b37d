"""JSON from outside (API bodies, console form fields), held to what the database can store.

Python's parser accepts ``NaN`` and ``Infinity``, which are not JSON and which PostgreSQL's json
type refuses, and ``\\ud800``-style escapes that leave an unpaired surrogate in a string, which
no UTF-8 database, page or log can encode. Both would fail far from the input, as a 500.
"""

from __future__ import annotations

import json


def loads(text: str):
    """``json.loads`` that raises ``ValueError`` (with a reason) for NaN, Infinity and unpaired surrogates."""
    value = json.loads(text, parse_constant=_refuse_constant)
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string holds an unpaired surrogate (a lone \\ud800-\\udfff escape)") from None
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")
