"""Measurements, their summary statistics, and the two forms of a run's report: a table and JSON."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.95 for p95) of a non-empty list."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary(samples: list[float]) -> dict | None:
    """median, p95, min, max and count of ``samples``; None when there are none."""
    if not samples:
        return None
    return {
        "median": statistics.median(samples),
        "p95": percentile(samples, 0.95),
        "min": min(samples),
        "max": max(samples),
        "count": len(samples),
    }


@dataclass
class Measurement:
    """One number the run reports: ``value`` is the headline (the median when there are samples)."""

    name: str
    unit: str
    value: float | None
    target: str = ""
    met: bool | None = None  # None: reported, not judged
    stats: dict | None = None
    note: str = ""

    @classmethod
    def of_samples(cls, name: str, unit: str, samples: list[float], **kwargs) -> Measurement:
        stats = summary(samples)
        return cls(name, unit, stats["median"] if stats else None, stats=stats, **kwargs)

    @property
    def median(self) -> float | None:
        return self.stats["median"] if self.stats else None

    @property
    def p95(self) -> float | None:
        return self.stats["p95"] if self.stats else None


@dataclass
class ScenarioReport:
    """What one scenario measured, with notes on how (sizes, flags, anything unusual)."""

    name: str
    title: str
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def add(self, measurement: Measurement) -> Measurement:
        self.measurements.append(measurement)
        return measurement


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
    if unit in {"count", "threads"}:
        return f"{value:.0f}"
    if unit == "ratio":
        return f"{value:.2f}x"
    if unit == "req/s":
        return f"{value:.0f} req/s"
    return f"{value:.1f} {unit}"


def _verdict(measurement: Measurement) -> str:
    if measurement.met is None:
        return "-"
    return "met" if measurement.met else "NOT MET"


def render_table(environment: dict, reports: list[ScenarioReport]) -> str:
    """The human-readable report: environment, then one block of rows per scenario."""
    lines = ["Lanes benchmark", ""]
    for key, value in environment.items():
        lines.append(f"  {key + ':':<14}{value}")
    header = f"  {'measurement':<52}{'median/value':>14}{'p95':>12}  {'target':<36}result"
    for report in reports:
        lines += ["", f"{report.title}  [{report.seconds:.0f} s]", header, "  " + "-" * (len(header) - 2)]
        for m in report.measurements:
            p95 = _number(m.p95, m.unit) if m.stats else ""
            lines.append(
                f"  {m.name:<52}{_number(m.value, m.unit):>14}{p95:>12}  {m.target or '-':<36}{_verdict(m)}"
            )
            if m.note:
                lines.append(f"    ({m.note})")
        for note in report.notes:
            lines.append(f"  note: {note}")
        if report.error:
            lines.append(f"  ERROR: {report.error}")
    judged = [m for r in reports for m in r.measurements if m.met is not None]
    met = sum(1 for m in judged if m.met)
    lines += ["", f"Targets met: {met} of {len(judged)}."]
    return "\n".join(lines)


def results_document(environment: dict, reports: list[ScenarioReport], started_at: str, seconds: float,
                     options: dict) -> dict:
    judged = [m for r in reports for m in r.measurements if m.met is not None]
    return {
        "started_at": started_at,
        "seconds": round(seconds, 1),
        "options": options,
        "environment": environment,
        "scenarios": [asdict(report) for report in reports],
        "targets": {"judged": len(judged), "met": sum(1 for m in judged if m.met)},
    }


def write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
