"""``echo``: returns its message, after an optional delay (diagnostics and benchmarks)."""

import time

from jobs.context import JobContext
from jobs.registry import job_type


@job_type(
    "echo",
    title="Echo a message",
    schema={
        "properties": {
            "message": {"type": "string", "maxLength": 10000, "title": "Message"},
            "delay_ms": {"type": "integer", "minimum": 0, "maximum": 60000, "default": 0, "title": "Delay (ms)"},
        },
        "required": ["message"],
    },
    timeout=90,
    cancelable=True,
)
def echo(ctx: JobContext, payload: dict) -> dict:
    delay = payload.get("delay_ms", 0) / 1000
    if delay:
        # Waiting reports progress like real work does, so the delay exercises the whole live path.
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < delay:
            ctx.progress(100 * elapsed / delay, "waiting")
            ctx.sleep(min(0.05, delay - elapsed))
    return {"message": payload["message"]}
