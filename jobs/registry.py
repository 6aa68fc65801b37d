"""The catalogue of job types: a name, a payload schema, a title, a timeout, cancelability."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from jobs.context import JobContext

JobFunction = Callable[[JobContext, dict], dict]


@dataclass(frozen=True)
class JobType:
    name: str
    title: str
    schema: dict
    func: JobFunction
    timeout: int
    cancelable: bool
    validator: Draft202012Validator = field(repr=False, compare=False)

    def payload_errors(self, payload: Any) -> dict[str, str]:
        """Problems with a payload, keyed by the field they concern ("" for the whole payload)."""
        if not isinstance(payload, dict):
            return {"": "payload must be a JSON object"}
        errors: dict[str, str] = {}
        for path, message in _unstorable_values(payload):
            errors[path] = message
        for error in sorted(self.validator.iter_errors(payload), key=lambda e: list(e.path)):
            if error.validator == "additionalProperties":
                for name in sorted(set(payload) - set(self.schema.get("properties", {}))):
                    errors[name] = "unknown field"
                continue
            if error.validator == "required":
                missing = error.message.split("'")[1]
                errors[missing] = "required field"
                continue
            path = ".".join(str(part) for part in error.path)
            errors.setdefault(path, error.message)
        return errors


def _unstorable_values(value: Any, path: str = ""):
    """Values JSON in the database cannot hold: NUL characters, infinite or NaN numbers (from a form)."""
    if isinstance(value, str):
        if "\x00" in value:
            yield path, "NUL characters are not allowed"
    elif isinstance(value, float) and not math.isfinite(value):
        yield path, "must be a finite number"
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                yield child, "NUL characters are not allowed"
            yield from _unstorable_values(item, child)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unstorable_values(item, f"{path}.{index}" if path else str(index))


_registry: dict[str, JobType] = {}


def job_type(name: str, *, title: str, schema: dict, timeout: int = 60, cancelable: bool = False):
    """Register the decorated function as the job type ``name``.

    Fields not named in the schema are refused: ``additionalProperties`` defaults to false.
    """
    schema = {"type": "object", "additionalProperties": False, "properties": {}, **schema}
    Draft202012Validator.check_schema(schema)

    def register(func: JobFunction) -> JobFunction:
        if name in _registry:
            raise ValueError(f"job type {name!r} is registered twice")
        _registry[name] = JobType(
            name=name, title=title, schema=schema, func=func, timeout=timeout,
            cancelable=cancelable, validator=Draft202012Validator(schema),
        )
        return func

    return register


def get_job_type(name: str) -> JobType | None:
    return _registry.get(name)


def all_job_types() -> list[JobType]:
    return sorted(_registry.values(), key=lambda jt: jt.name)
