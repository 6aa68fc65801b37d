"""The verdict: every acknowledged request against the database, the audit and what the clients saw.

Violations (each makes the soak exit non-zero):

- ``lost``: acknowledged (200/202 with an id) but missing from the database, or not ended once
  the run drained.
- ``duplicated``: more than one row for one submit (its tag), a request run again after it had
  ended, or a request run and then taken back by its submit (its effects stay, the row goes).
- ``concurrent``: two runs of one user's requests overlapping in time — the same request run by
  two processes at once, or two requests of a lane at once. A run lasts from its claim to the
  last write its process made to that request (progress or outcome).
- ``reordered``: request n+1 of a user started before request n ended (by the audit's claim and
  end times, or by the rows' ``started_at``/``ended_at``).
- ``ledger``: a balance other than the sum of the user's finished deposits minus withdrawals, an
  entry without its finished request (or the reverse), a result naming another balance, or an
  ``insufficient_funds`` although the funds were there.
- ``failed``: a request failed (``job_error``, ``timeout``, ...) or canceled: the soak's jobs
  cannot fail on their own, so this is Lanes' plumbing reported as the request's outcome.
  ``worker_lost`` after repeated crashes is allowed (SPEC §3.5) and only counted.
- ``http_500``: any 5xx other than 503; ``bad_answer``: any other answer a valid submit must not get.
- ``ambiguous_503``: a submit answered only 503 (or 429) until its retry was answered 200 — the
  request had been made after all, so the 503 was not "nothing was done".
- ``slow_recovery`` (only with ``--recovery-limit``): a fault after which some lane with work took
  longer than the limit to make progress again.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise

from .audit import Change
from .evidence import Evidence, Row
from .faults import Fault
from .traffic import BadAnswer, Submit

VIOLATIONS = ("lost", "duplicated", "concurrent", "reordered", "ledger", "failed", "http_500", "bad_answer",
              "ambiguous_503", "slow_recovery")
TERMINAL = ("finished", "failed", "canceled")
WEB_APP = "soak-web"


@dataclass
class Violation:
    kind: str
    at: float
    text: str
    user_id: int | None = None
    request_id: int | None = None
    fault: str = ""  # the fault it followed (nearest one that began before it)
    note: str = ""  # the last fault to end before it, when that is another one


@dataclass
class Run:
    """One claim of a request and the writes its process made to it until that process's next claim."""

    request_id: int
    user_id: int
    app: str
    start: float
    end: float


@dataclass
class Verdict:
    violations: list[Violation] = field(default_factory=list)
    acknowledged: int = 0
    finished: int = 0
    worker_lost: int = 0
    rows: int = 0
    runs: int = 0
    reruns: int = 0
    two_worker_episodes: int = 0
    unaudited: list[int] = field(default_factory=list)  # rows whose attempts the audit does not explain
    answers: Counter = field(default_factory=Counter)

    def count(self, kind: str) -> int:
        return sum(1 for violation in self.violations if violation.kind == kind)

    def add(self, kind: str, at: float, text: str, user_id: int | None = None, request_id: int | None = None):
        self.violations.append(Violation(kind, at, text, user_id, request_id))


def judge(evidence: Evidence, submits: list[Submit], bad_answers: list[BadAnswer], faults: list[Fault],
          two_workers: list[tuple[float, int, tuple[int, ...]]]) -> Verdict:
    verdict = Verdict()
    by_request: dict[int, list[Change]] = defaultdict(list)
    for change in sorted(evidence.changes, key=lambda c: (c.at, c.seq)):
        by_request[change.request_id].append(change)
    acked = [submit for submit in submits if submit.acknowledged]
    verdict.acknowledged = len(acked)
    verdict.rows = len(evidence.rows)
    for submit in submits:
        verdict.answers.update(submit.answers)

    _check_lost(verdict, evidence, acked, by_request)
    _check_duplicates(verdict, evidence, by_request)
    # The instrument checks itself: every start of a row is a claim in the audit.
    verdict.unaudited = [row.id for row in evidence.rows.values()
                         if row.attempts != sum(1 for c in by_request.get(row.id, ()) if c.is_claim)]
    runs = _runs(by_request)
    verdict.runs = len(runs)
    verdict.reruns = len(runs) - len({run.request_id for run in runs})
    _check_overlaps(verdict, runs, evidence)
    _check_order(verdict, evidence, by_request)
    _check_outcomes(verdict, evidence, acked)
    _check_ledgers(verdict, evidence)
    _check_answers(verdict, submits, bad_answers)
    verdict.two_worker_episodes = _episodes(two_workers)
    attribute(verdict, faults)
    return verdict


def _check_lost(verdict: Verdict, evidence: Evidence, acked: list[Submit], by_request) -> None:
    for submit in acked:
        row = evidence.rows.get(submit.request_id)
        if row is None:
            gone = any(change.op == "delete" for change in by_request.get(submit.request_id, ()))
            verdict.add("lost", submit.acked_at, f"request {submit.request_id} ({submit.type}, {submit.tag}) was "
                        f"acknowledged but {'deleted' if gone else 'is not in the database'}",
                        submit.user.id, submit.request_id)
        elif row.status not in TERMINAL:
            verdict.add("lost", submit.acked_at, f"request {row.id} ({row.type}) still {row.status} after the drain "
                        f"(attempts {row.attempts})", row.user_id, row.id)
        elif row.key != submit.key:
            verdict.add("bad_answer", submit.acked_at, f"submit {submit.key} was acknowledged as request {row.id}, "
                        f"which carries key {row.key!r}", row.user_id, row.id)


def _tag(row: Row) -> str | None:
    payload = row.payload or {}
    return payload.get("memo") if row.type.startswith("ledger.") else payload.get("message")


def _check_duplicates(verdict: Verdict, evidence: Evidence, by_request) -> None:
    rows_by_tag: dict[str, list[Row]] = defaultdict(list)
    for row in evidence.rows.values():
        if (tag := _tag(row)) is not None:
            rows_by_tag[tag].append(row)
    for tag, rows in rows_by_tag.items():
        for extra in rows[1:]:
            verdict.add("duplicated", extra.started_at or extra.ended_at or 0.0,
                        f"submit {tag} has {len(rows)} rows ({', '.join(str(r.id) for r in rows)})",
                        extra.user_id, extra.id)
    for request_id, changes in by_request.items():
        ended = False
        claimed = False
        for change in changes:
            if change.is_claim:
                if ended:
                    verdict.add("duplicated", change.at, f"request {request_id} was claimed again after it had "
                                f"ended (attempt {change.new_attempts}, by {change.app})",
                                change.user_id, request_id)
                claimed = True
            elif change.is_end:
                ended = True
            elif change.op == "delete" and claimed:
                verdict.add("duplicated", change.at, f"request {request_id} had been run (status "
                            f"{change.old_status}) when its submit deleted it: its effects stay, a retry runs "
                            f"it again", change.user_id, request_id)


def _runs(by_request: dict[int, list[Change]]) -> list[Run]:
    runs: list[Run] = []
    for request_id, changes in by_request.items():
        open_runs: dict[str, Run] = {}  # app -> its current run of this request
        for change in changes:
            if change.op != "update":
                continue
            if change.is_claim:
                run = Run(request_id, change.user_id, change.app, change.at, change.at)
                open_runs[change.app] = run
                runs.append(run)
            elif change.app in open_runs:
                open_runs[change.app].end = change.at
    return runs


def _check_overlaps(verdict: Verdict, runs: list[Run], evidence: Evidence) -> None:
    by_user: dict[int, list[Run]] = defaultdict(list)
    for run in runs:
        by_user[run.user_id].append(run)
    for user_id, user_runs in by_user.items():
        user_runs.sort(key=lambda run: run.start)
        longest: Run | None = None
        for run in user_runs:
            if longest is not None and run.start < longest.end:
                same = run.request_id == longest.request_id
                what = (f"request {run.request_id} ran twice at once" if same
                        else f"requests {longest.request_id} and {run.request_id} ran at once")
                verdict.add("concurrent", run.start, f"{what}: {longest.app} until +{longest.end - run.start:.2f} s "
                            f"after {run.app} claimed {run.request_id}", user_id, run.request_id)
            if longest is None or run.end > longest.end:
                longest = run


def _check_order(verdict: Verdict, evidence: Evidence, by_request) -> None:
    """Per user, in id order: each request first started after the one before it last ended."""
    rows_by_user: dict[int, list[Row]] = defaultdict(list)
    for row in evidence.rows.values():
        rows_by_user[row.user_id].append(row)
    for user_id, rows in rows_by_user.items():
        rows.sort(key=lambda row: row.id)
        for previous, row in pairwise(rows):
            claims = [c for c in by_request.get(row.id, ()) if c.is_claim]
            if not claims:
                continue
            first_claim = claims[0].at
            before = by_request.get(previous.id, ())
            previous_claims = [c for c in before if c.is_claim]
            previous_ends = [c.at for c in before if c.is_end]
            problem = None
            if previous_claims and previous_claims[0].at > first_claim:
                problem = f"request {row.id} started before the older {previous.id}"
            elif previous_ends and max(previous_ends) > first_claim:
                problem = (f"request {row.id} started {max(previous_ends) - first_claim:.2f} s before "
                           f"{previous.id} last ended")
            elif not previous_ends:
                problem = (f"request {row.id} started while the older {previous.id} had not ended "
                           f"(it is {previous.status} now)")
            elif (row.started_at is not None and previous.ended_at is not None
                  and row.started_at < previous.ended_at):
                problem = (f"request {row.id} has started_at {previous.ended_at - row.started_at:.2f} s before "
                           f"{previous.id}'s ended_at")
            if problem:
                verdict.add("reordered", first_claim, problem, user_id, row.id)


def _check_outcomes(verdict: Verdict, evidence: Evidence, acked: list[Submit]) -> None:
    for submit in acked:
        row = evidence.rows.get(submit.request_id)
        if row is None or row.status not in TERMINAL:
            continue
        at = row.ended_at or submit.acked_at
        if row.status == "finished":
            verdict.finished += 1
            if row.type == "echo" and (row.result or {}).get("message") != submit.payload["message"]:
                verdict.add("failed", at, f"echo {row.id} returned {row.result!r}", row.user_id, row.id)
        elif row.status == "canceled":
            verdict.add("failed", at, f"request {row.id} ({row.type}) was canceled; nobody asked",
                        row.user_id, row.id)
        elif row.error_code == "worker_lost":
            verdict.worker_lost += 1
        elif row.error_code != "insufficient_funds":  # judged with the ledger
            verdict.add("failed", at, f"request {row.id} ({row.type}, attempt {row.attempts}) failed with "
                        f"{row.error_code}", row.user_id, row.id)


def _check_ledgers(verdict: Verdict, evidence: Evidence) -> None:
    rows_by_user: dict[int, list[Row]] = defaultdict(list)
    for row in evidence.rows.values():
        if row.type in ("ledger.deposit", "ledger.withdraw"):
            rows_by_user[row.user_id].append(row)
    users = set(rows_by_user) | set(evidence.balances)
    entry_users = defaultdict(list)
    for entry in evidence.entries.values():
        entry_users[entry.user_id].append(entry)
    users |= set(entry_users)
    for user_id in sorted(users):
        balance = 0
        finished_ids = set()
        last_at = 0.0
        for row in sorted(rows_by_user.get(user_id, ()), key=lambda r: r.id):
            amount = row.payload["amount"] * (1 if row.type == "ledger.deposit" else -1)
            at = row.ended_at or 0.0
            last_at = max(last_at, at)
            entry = evidence.entries.get(row.id)
            if row.status == "finished":
                balance += amount
                finished_ids.add(row.id)
                if (row.result or {}).get("balance") != balance:
                    verdict.add("ledger", at, f"{row.type} {row.id} answered balance "
                                f"{(row.result or {}).get('balance')}, expected {balance}", user_id, row.id)
                if entry is None:
                    verdict.add("ledger", at, f"finished {row.type} {row.id} has no ledger entry", user_id, row.id)
                elif entry.amount != amount or entry.balance_after != balance:
                    verdict.add("ledger", at, f"entry of {row.id}: amount {entry.amount}, balance after "
                                f"{entry.balance_after}; expected {amount}, {balance}", user_id, row.id)
            elif row.status == "failed" and row.error_code == "insufficient_funds" and balance + amount >= 0:
                verdict.add("ledger", at, f"withdrawal {row.id} of {-amount} failed for funds with balance "
                            f"{balance} (the deposits before it had not run first)", user_id, row.id)
        strays = [entry.request_id for entry in entry_users.get(user_id, ()) if entry.request_id not in finished_ids]
        if strays:
            verdict.add("ledger", last_at, f"ledger entries without a finished request: {strays[:5]}", user_id)
        account = evidence.balances.get(user_id, 0)
        entries_sum = sum(entry.amount for entry in entry_users.get(user_id, ()))
        if account != balance or entries_sum != balance:
            verdict.add("ledger", last_at, f"user {user_id}: balance {account}, entries sum to {entries_sum}, "
                        f"finished deposits minus withdrawals {balance}", user_id)


def _check_answers(verdict: Verdict, submits: list[Submit], bad_answers: list[BadAnswer]) -> None:
    for bad in bad_answers:
        kind = "http_500" if bad.status >= 500 else "bad_answer"
        verdict.add(kind, bad.at, f"{bad.status} for {bad.key}: {bad.body[:160]}")
    for submit in submits:
        if submit.acknowledged and submit.answers[-1] == "200":
            before = submit.answers[:-1]
            if "503" in before and set(before) <= {"503", "429"}:
                verdict.add("ambiguous_503", submit.first_sent, f"{submit.key}: answered {', '.join(before)}, "
                            f"then the retry found request {submit.request_id} already made",
                            submit.user.id, submit.request_id)


def _episodes(sightings: list[tuple[float, int, tuple[int, ...]]]) -> int:
    return len({(lane, pids) for _, lane, pids in sightings})


def attribute(verdict: Verdict, faults: list[Fault]) -> None:
    """Name the fault each violation followed: the last to begin before it (and, if another, the last to end)."""
    fired = sorted((fault for fault in faults if fault.began and not fault.skipped), key=lambda f: f.began)
    starts = [fault.began for fault in fired]
    names = {id(fault): f"{fault.kind}#{index + 1}" for index, fault in enumerate(fired)}
    for violation in verdict.violations:
        index = bisect_right(starts, violation.at + 0.5) - 1
        if index < 0:
            violation.fault = "before any fault"
            continue
        began = fired[index]
        violation.fault = names[id(began)]
        ended = max((fault for fault in fired if fault.ended <= violation.at), key=lambda f: f.ended, default=None)
        if ended is not None and ended is not began:
            violation.note = f"{names[id(ended)]} had ended {violation.at - ended.ended:.1f} s before"


def recovery_seconds(fault: Fault, changes: list[Change], observed_until: float) -> tuple[float | None, bool, int]:
    """(seconds from the fault's end until every lane with work then made progress, censored?, lanes).

    A lane has work at the fault's end when one of its requests was inserted before and had not
    ended; progress is any claim, progress write or outcome by a worker process after it. A lane
    whose request ran through the fault undisturbed (claimed before the fault ended, finished after
    it by the same attempt) had nothing to recover from until that request ended: its clock starts
    at that end, and it counts only if it still had work then. (A supervisor killed with SIGKILL
    has its lane workers finish the job they run before they stop: the next job waits for that one,
    whatever the fault, as it would without one.)
    """
    end = fault.ended
    inserted: dict[int, tuple[float, int]] = {}
    finished_at: dict[int, float] = {}
    gone_at: dict[int, float] = {}
    progress: dict[int, list[float]] = defaultdict(list)
    last_claim: dict[int, Change] = {}  # per lane: its latest claim at or before the fault's end
    ended_by_attempt: dict[tuple[int, int], float] = {}  # (request, attempt) -> when that run ended
    for change in changes:
        if change.op == "insert":
            inserted[change.request_id] = (change.at, change.user_id)
        elif change.op == "delete":
            gone_at[change.request_id] = change.at
        else:
            if change.is_end:
                finished_at.setdefault(change.request_id, change.at)
                ended_by_attempt.setdefault((change.request_id, change.new_attempts or 0), change.at)
            if change.is_claim and change.at <= end:
                last_claim[change.user_id] = change
            if change.app != WEB_APP and change.new_status != "queued":  # a repair is not progress
                progress[change.user_id].append(change.at)

    def has_work(user_id: int, at: float, besides: int | None = None) -> bool:
        return any(
            owner == user_id and request_id != besides and inserted_at <= at
            and finished_at.get(request_id, float("inf")) > at and gone_at.get(request_id, float("inf")) > at
            for request_id, (inserted_at, owner) in inserted.items()
        )

    clocks: dict[int, float] = {}  # per lane with work: when its recovery is measured from
    for user_id in {owner for _, owner in inserted.values()}:
        if not has_work(user_id, end):
            continue
        claim = last_claim.get(user_id)
        through = claim and ended_by_attempt.get((claim.request_id, claim.new_attempts or 0))
        if through is not None and through > end:  # ran through the fault, undisturbed
            if has_work(user_id, through, besides=claim.request_id):
                clocks[user_id] = through
            continue
        clocks[user_id] = end
    if not clocks:
        return None, False, 0
    worst = 0.0
    censored = False
    for user_id, since in clocks.items():
        later = [at for at in progress[user_id] if at > since]
        if later:
            worst = max(worst, min(later) - since)
        else:
            worst = max(worst, observed_until - since)
            censored = True
    return worst, censored, len(clocks)
