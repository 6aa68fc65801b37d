"""A WSGI app that only answers: ``bench.web_costs`` measures gunicorn's own CPU per request with it."""

BODY = b'{"ok": true}'


def app(_environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
