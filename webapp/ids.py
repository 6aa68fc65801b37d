"""Row ids as they arrive from outside (URLs, forms, query strings): what may name a row."""

from __future__ import annotations

from werkzeug.routing import IntegerConverter

MAX_ID = 2**63 - 1  # the largest id a BIGINT (PostgreSQL) or INTEGER (SQLite) key holds


def parse_id(value) -> int | None:
    """The id in ``value`` (an int, or ASCII digits) if it can name a row; else None."""
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()) or len(value) > len(str(MAX_ID)):
            return None
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID else None


class IdConverter(IntegerConverter):
    """``<id:name>`` in a route: a row id, 1..MAX_ID; anything else is a 404 before the view runs."""

    def __init__(self, url_map):
        super().__init__(url_map, min=1, max=MAX_ID)
