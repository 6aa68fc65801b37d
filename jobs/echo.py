"""``echo``: returns its message, after an optional delay (diagnostics and benchmarks)."""

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
    delay_ms = payload.get("delay_ms", 0)
    if delay_ms:
        ctx.sleep(delay_ms / 1000)
    return {"message": payload["message"]}
