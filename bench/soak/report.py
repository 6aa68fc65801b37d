"""The soak's table (per fault kind, then totals and violations) and its JSON document."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path

from .checks import VIOLATIONS, Verdict
from .faults import KINDS, Fault

SHOWN_VIOLATIONS = 40


def fault_rows(faults: list[Fault], recoveries: dict[int, tuple[float | None, bool, int]]) -> list[dict]:
    rows = []
    planned = {fault.kind for fault in faults}
    for kind in (kind for kind in KINDS if kind in planned):
        mine = [fault for fault in faults if fault.kind == kind and fault.began and not fault.skipped]
        times = [recoveries[id(fault)] for fault in mine if recoveries[id(fault)][0] is not None]
        seconds = [value for value, _, _ in times]
        rows.append({
            "kind": kind,
            "count": len(mine),
            "skipped": sum(1 for fault in faults if fault.kind == kind and fault.skipped),
            "errors": sum(1 for fault in mine if fault.error),
            "measured": len(seconds),
            "recovery_median_s": round(statistics.median(seconds), 2) if seconds else None,
            "recovery_max_s": round(max(seconds), 2) if seconds else None,
            "censored": sum(1 for _, censored, _ in times if censored),
        })
    return rows


def violations_by_fault(verdict: Verdict) -> dict[str, Counter]:
    table: dict[str, Counter] = defaultdict(Counter)
    for violation in verdict.violations:
        table[violation.fault.split("#")[0]][violation.kind] += 1
    return table


def render(verdict: Verdict, faults: list[Fault], recoveries, settings: dict) -> str:
    lines = [f"Lanes fault soak: {settings['summary']}", ""]
    lines.append(f"{'fault':<18} {'count':>5} {'recovery median':>16} {'recovery max':>13}")
    for row in fault_rows(faults, recoveries):
        median = "-" if row["recovery_median_s"] is None else f"{row['recovery_median_s']:.2f} s"
        worst = "-" if row["recovery_max_s"] is None else f"{row['recovery_max_s']:.2f} s"
        if row["censored"]:
            worst = f">{worst}"
        note = []
        if row["skipped"]:
            note.append(f"{row['skipped']} skipped")
        if row["errors"]:
            note.append(f"{row['errors']} could not be carried out")
        lines.append(f"{row['kind']:<18} {row['count']:>5} {median:>16} {worst:>13}"
                     + (f"  ({', '.join(note)})" if note else ""))
    lines.append("")
    totals = [("acknowledged", verdict.acknowledged), ("finished", verdict.finished)]
    totals += [(kind, verdict.count(kind)) for kind in VIOLATIONS]
    lines.append("  ".join(f"{name} {value}" for name, value in totals))
    answers = ", ".join(f"{answer}: {count}" for answer, count in sorted(verdict.answers.items()))
    lines.append(f"HTTP answers and client errors: {answers}; waits for a backlog to shrink: "
                 f"{settings.get('backpressure_waits', 0)}")
    lines.append(f"runs {verdict.runs} (re-runs {verdict.reruns}), worker_lost {verdict.worker_lost} (allowed), "
                 f"two live lane workers on one lane seen {verdict.two_worker_episodes} times (process table)")
    if verdict.unaudited:
        lines.append(f"WARNING: the audit does not explain the attempts of {len(verdict.unaudited)} requests "
                     f"({verdict.unaudited[:5]}): the soak's instrument missed changes")
    by_fault = violations_by_fault(verdict)
    if by_fault:
        lines += ["", "Violations by the fault they followed (the last one to begin before them):"]
        for fault_kind, counts in sorted(by_fault.items()):
            lines.append(f"  {fault_kind:<18} " + ", ".join(f"{kind} {count}" for kind, count in counts.most_common()))
        lines += ["", f"First {min(SHOWN_VIOLATIONS, len(verdict.violations))} of {len(verdict.violations)} "
                  "violations:"]
        for violation in sorted(verdict.violations, key=lambda v: v.at)[:SHOWN_VIOLATIONS]:
            note = f" ({violation.note})" if violation.note else ""
            lines.append(f"  [{violation.kind}] after {violation.fault}{note}: {violation.text}")
    lines.append("")
    lines.append("PASS: no violation." if not verdict.violations else
                 f"FAIL: {len(verdict.violations)} violations.")
    return "\n".join(lines)


def document(verdict: Verdict, faults: list[Fault], recoveries, settings: dict) -> dict:
    return {
        "settings": settings,
        "faults": fault_rows(faults, recoveries),
        "fault_log": [
            {"kind": f.kind, "began": f.began, "ended": f.ended, "seconds": round(f.ended - f.began, 2),
             "detail": f.detail, "skipped": f.skipped, "error": f.error, "extra": f.extra,
             "recovery_s": recoveries[id(f)][0], "censored": recoveries[id(f)][1], "busy_lanes": recoveries[id(f)][2]}
            for f in faults if f.began
        ],
        "totals": {"acknowledged": verdict.acknowledged, "finished": verdict.finished,
                   **{kind: verdict.count(kind) for kind in VIOLATIONS},
                   "worker_lost": verdict.worker_lost, "runs": verdict.runs, "reruns": verdict.reruns,
                   "two_worker_episodes": verdict.two_worker_episodes, "unaudited": len(verdict.unaudited)},
        "answers": dict(verdict.answers),
        "violations_by_fault": {kind: dict(counts) for kind, counts in violations_by_fault(verdict).items()},
        "violations": [
            {"kind": v.kind, "at": v.at, "fault": v.fault, "note": v.note, "user_id": v.user_id,
             "request_id": v.request_id, "text": v.text}
            for v in sorted(verdict.violations, key=lambda v: v.at)
        ],
        "passed": not verdict.violations,
    }


def write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
