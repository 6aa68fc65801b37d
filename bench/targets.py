"""The targets of issue 6, judged on the run's own numbers: ratios to bare Celery solo, and budgets.

Relative targets compare Lanes with Celery measured minutes earlier in the same run, on the same
machine and Redis, so that the load other programs put on a shared host weighs on both sides.
A target whose inputs were not measured (``--only``, or a scenario that failed) is reported as
not measured and not judged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench import drain, peers, scenarios
from bench.results import Measurement, ScenarioReport

WEB = f"{scenarios.CPU_PREFIX}web (gunicorn)"


@dataclass
class Target:
    name: str
    unit: str
    wanted: str
    lanes: tuple[str, str]  # (scenario, measurement) of the Lanes figure
    peer: tuple[str, str] | None  # ... of the Celery figure it is divided by, when relative
    holds: Callable[[float], bool]


TARGETS = [
    Target("end-to-end throughput / Celery burst", "ratio", ">= 0.4x",
           ("throughput", scenarios.END_TO_END), ("celery", peers.BURST), lambda r: r >= 0.4),
    Target("drain rate / Celery drain", "ratio", ">= 0.6x",
           ("drain", drain.DRAIN), ("celery", peers.DRAIN), lambda r: r >= 0.6),
    Target("warm turnaround / Celery warm (medians)", "ratio", "<= 2x",
           ("warm", scenarios.WARM_FINISHED), ("celery", peers.WARM), lambda r: r <= 2),
    Target("web CPU per submit (throughput)", "ms", "<= 2.5 ms",
           ("throughput", WEB), None, lambda v: v <= 2.5),
    Target("worker-side CPU per job (drain)", "ms", "<= 3 ms",
           ("drain", drain.WORKER_CPU), None, lambda v: v <= 3),
    Target("worker-side Redis commands per job (drain)", "/job", "<= 8",
           ("drain", drain.WORKER_COMMANDS), None, lambda v: v <= 8),
    Target("worker-side database statements per job (drain)", "/job", "<= 3",
           ("drain", drain.WORKER_STATEMENTS), None, lambda v: v <= 3),
    Target("cold lane start p50 (submit returned -> started)", "ms", "<= 50 ms",
           ("cold", scenarios.COLD_STARTED), None, lambda v: v <= 50),
]


def _value(reports: dict[str, ScenarioReport], where: tuple[str, str]) -> float | None:
    scenario, name = where
    report = reports.get(scenario)
    if report is None or report.error:
        return None
    found = next((m for m in report.measurements if m.name == name), None)
    return None if found is None else found.value


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f} {unit}" if unit != "ms" or value >= 0.1 else f"{value:.2f} ms"


def judge(reports: list[ScenarioReport]) -> ScenarioReport:
    """One row per target: the ratio or the budget, met or not."""
    by_name = {report.name: report for report in reports}
    summary = ScenarioReport("targets", "Targets (issue 6): Lanes against bare Celery solo, same run")
    for target in TARGETS:
        lanes = _value(by_name, target.lanes)
        peer = _value(by_name, target.peer) if target.peer else None
        if target.peer is None:
            value, note = lanes, ""
        elif lanes is not None and peer:
            value = lanes / peer
            unit = next(m.unit for m in by_name[target.lanes[0]].measurements if m.name == target.lanes[1])
            note = f"Lanes {_number(lanes, unit)}, Celery {_number(peer, unit)}"
        else:
            value, note = None, ""
        if value is None:
            summary.add(Measurement(target.name, target.unit, None, target=target.wanted,
                                    note="not measured in this run"))
            continue
        summary.add(Measurement(target.name, target.unit, value, target=target.wanted, met=target.holds(value),
                                note=note))
    rq = by_name.get("rq")
    if rq is not None and not rq.error:
        for label, lanes_where, rq_name in (
            ("end-to-end throughput / RQ burst", ("throughput", scenarios.END_TO_END), peers.BURST),
            ("drain rate / RQ drain", ("drain", drain.DRAIN), peers.DRAIN),
            ("warm turnaround / RQ warm (medians)", ("warm", scenarios.WARM_FINISHED), peers.WARM),
        ):
            lanes, peer = _value(by_name, lanes_where), _value(by_name, ("rq", rq_name))
            if lanes is not None and peer:
                summary.add(Measurement(label, "ratio", lanes / peer, note="for reference; not a target"))
    return summary
