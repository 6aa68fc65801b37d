"""JSON from outside (API bodies, console form fields), held to what the database can store.

Python's parser accepts ``NaN`` and ``Infinity``, which are not JSON and which PostgreSQL's json
type refuses; it turns numbers like ``1e400`` into infinity; and it lets ``\\ud800``-style escapes
leave an unpaired surrogate in a string, which no UTF-8 database, page or log can encode. Each
would fail far from the input: as a 500, or as a JSON answer that is not JSON.
"""

from __future__ import annotations

import json


def loads(text: str):
    """``json.loads`` that raises ``ValueError`` (with a reason) for NaN, Infinity, numbers too large
    for a float, and unpaired surrogates."""
    value = json.loads(text, parse_constant=_refuse_constant)
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string holds an unpaired surrogate (a lone \\ud800-\\udfff escape)") from None
    except ValueError:
        raise ValueError("a number is too large to be represented") from None
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")
