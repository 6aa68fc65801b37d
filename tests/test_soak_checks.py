"""The soak's verdict on made-up evidence: each kind of violation is seen, and a clean run is clean.

The soak is only worth its exit status if its checks can fail; these cases are the failures
issue 7 describes (a request run by two workers at once, a withdrawal run before its deposit,
a 503 for a request that was made), written as the audit would record them.
"""

from __future__ import annotations

from dataclasses import replace

from bench.soak.audit import Change
from bench.soak.checks import judge, recovery_seconds
from bench.soak.evidence import Entry, Evidence, Row
from bench.soak.faults import Fault
from bench.soak.traffic import BadAnswer, SoakUser, Submit

USER = SoakUser(0, 1, "soak0", "token")
T0 = 1_000_000.0


class Story:
    """Builds rows, ledger and audit changes of one user's requests, as a soak run would leave them."""

    def __init__(self):
        self.rows: dict[int, Row] = {}
        self.entries: dict[int, Entry] = {}
        self.changes: list[Change] = []
        self.submits: list[Submit] = []
        self.balance = 0

    def change(self, at, op, request_id, old, new, old_attempts, new_attempts, app):
        self.changes.append(Change(len(self.changes) + 1, T0 + at, op, request_id, USER.id, old, new,
                                   old_attempts, new_attempts, app))

    def request(self, request_id, kind, payload, runs, status="finished", error_code=None, result=None,
                answers=("202",), entry=True):
        """``runs``: (claim time, end time or None, app) per run; the last one with an end ends it."""
        tag = f"t:{request_id}"
        payload = {**payload, ("memo" if kind.startswith("ledger.") else "message"): tag}
        self.change(runs[0][0] - 0.5, "insert", request_id, None, "queued", None, 0, "soak-web")
        attempts = 0
        for claim, end, app in runs:
            attempts += 1
            self.change(claim, "update", request_id, "queued", "started", attempts - 1, attempts, app)
            if end is not None:
                self.change(end, "update", request_id, "started", status, attempts, attempts, app)
        if kind.startswith("ledger.") and status == "finished":
            self.balance += payload["amount"] * (1 if kind == "ledger.deposit" else -1)
            result = result or {"balance": self.balance}
            if entry:
                self.entries[request_id] = Entry(request_id, USER.id, payload["amount"] * (
                    1 if kind == "ledger.deposit" else -1), self.balance)
        elif kind == "echo" and status == "finished":
            result = result or {"message": tag}
        claim, end = runs[-1][0], max((r[1] for r in runs if r[1] is not None), default=None)
        self.rows[request_id] = Row(request_id, USER.id, kind, payload, status, result, error_code, attempts,
                                    f"soak-{tag}", T0 + claim, None if end is None else T0 + end)
        submit = Submit(USER, request_id, f"soak-{tag}", kind, payload, tag, list(answers), request_id,
                        T0 + runs[0][0] - 0.4, T0 + runs[0][0] - 0.6)
        self.submits.append(submit)
        return submit

    def judge(self, bad_answers=(), faults=()):
        evidence = Evidence(self.rows, {USER.id: self.balance} if self.balance else {}, self.entries, self.changes)
        return judge(evidence, self.submits, list(bad_answers), list(faults), [])


def clean_story() -> Story:
    story = Story()
    story.request(1, "ledger.deposit", {"amount": 100}, [(1, 1.1, "soak-pid-10")])
    story.request(2, "echo", {"delay_ms": 1000}, [(2, 3, "soak-pid-10")])
    # A crash re-run: the first worker died (no write after 4.2), another re-ran it later.
    story.request(3, "ledger.withdraw", {"amount": 40}, [(4, None, "soak-pid-10"), (6, 6.1, "soak-pid-11")])
    story.request(4, "echo", {}, [(7, 7.01, "soak-pid-11")])
    return story


def test_a_clean_story_has_no_violation_and_counts_its_reruns():
    verdict = clean_story().judge()
    assert [v.text for v in verdict.violations] == []
    assert verdict.unaudited == []
    assert (verdict.acknowledged, verdict.finished, verdict.runs, verdict.reruns) == (4, 4, 5, 1)


def test_a_request_still_written_by_its_first_worker_after_a_second_claimed_it_ran_concurrently():
    story = clean_story()
    # Issue 7 item 1: after a flush, worker 21 re-claims request 5 while worker 20 still runs it.
    story.request(5, "echo", {"delay_ms": 12000}, [(10, None, "soak-pid-20"), (13, 25, "soak-pid-21")])
    story.change(22, "update", 5, "started", "finished", 2, 2, "soak-pid-20")  # the first one's outcome
    story.request(6, "echo", {}, [(26, 26.1, "soak-pid-21")])
    verdict = story.judge(faults=[Fault("redis_flushall", 9, 0, began=T0 + 9.5, ended=T0 + 9.5)])
    concurrent = [v for v in verdict.violations if v.kind == "concurrent"]
    assert len(concurrent) == 1 and concurrent[0].request_id == 5
    assert concurrent[0].fault == "redis_flushall#1"


def test_a_request_started_before_the_older_one_ended_is_reordered_and_the_ledger_sees_it():
    story = Story()
    story.request(1, "ledger.deposit", {"amount": 50}, [(1, 3, "soak-pid-10")])
    # The withdrawal ran (and failed for funds) while the deposit before it was still running.
    story.request(2, "ledger.withdraw", {"amount": 30}, [(2, 2.5, "soak-pid-11")], status="failed",
                  error_code="insufficient_funds")
    verdict = story.judge()
    kinds = sorted(v.kind for v in verdict.violations)
    assert "reordered" in kinds and "concurrent" in kinds
    # Sequentially the balance was 50 when it ran: failing it for funds is a ledger violation.
    assert "ledger" in kinds


def test_a_balance_off_by_a_double_deposit_is_a_ledger_violation():
    story = clean_story()
    story.balance += 100  # the account moved, but no finished request explains it
    verdict = story.judge()
    assert [v.kind for v in verdict.violations] == ["ledger"]


def test_lost_failed_duplicated_500_and_an_ambiguous_503_are_each_counted():
    story = clean_story()
    stuck = story.request(5, "echo", {}, [(8, None, "soak-pid-11")], status="started")
    story.request(6, "echo", {}, [(9, 9.5, "soak-pid-11")], status="failed", error_code="job_error")
    story.request(7, "echo", {}, [(10, 10.1, "soak-pid-11")], answers=("503", "503", "200"))
    story.request(8, "echo", {}, [(11, 11.1, "soak-pid-11")], answers=("connection", "200"))  # no verdict
    story.rows[99] = Row(99, USER.id, "echo", {"message": "t:8"}, "finished", {"message": "t:8"}, None, 1,
                         None, T0 + 12, T0 + 12.1)  # a second row for submit t:8
    story.change(12, "update", 99, "queued", "started", 0, 1, "soak-pid-11")
    story.change(12.1, "update", 99, "started", "finished", 1, 1, "soak-pid-11")
    missing = Submit(USER, 100, "soak-t:100", "echo", {"message": "t:100"}, "t:100", ["202"], 100, T0 + 13, T0 + 13)
    story.submits.append(missing)
    verdict = story.judge(bad_answers=[BadAnswer(T0 + 5, 500, "soak-t:4", "Internal Server Error")])
    counts = {kind: verdict.count(kind) for kind in ("lost", "failed", "duplicated", "http_500", "ambiguous_503")}
    assert counts == {"lost": 2, "failed": 1, "duplicated": 1, "http_500": 1, "ambiguous_503": 1}
    lost = {v.request_id for v in verdict.violations if v.kind == "lost"}
    assert lost == {stuck.request_id, 100}


def test_recovery_is_the_time_until_every_lane_with_work_moved_again():
    story = clean_story()
    fault = Fault("postgres_stop", 3.5, 2, began=T0 + 3.5, ended=T0 + 5.5)
    # At 5.5 request 3 (claimed at 4 by a worker that died) was pending; it was re-claimed at 6.
    seconds, censored, busy = recovery_seconds(fault, story.changes, observed_until=T0 + 30)
    assert (round(seconds, 2), censored, busy) == (0.5, False, 1)
    idle = Fault("web_kill", 20, 0, began=T0 + 20, ended=T0 + 21)
    assert recovery_seconds(idle, story.changes, observed_until=T0 + 30) == (None, False, 0)


def test_a_lane_whose_job_ran_through_the_fault_recovers_from_that_jobs_end():
    """A supervisor SIGKILL: its lane worker finishes the 9 s job it runs, then stops; the lane's next
    request waits for that job whatever happens, so its recovery is counted from the job's end."""
    story = Story()
    story.request(1, "echo", {"delay_ms": 9000}, [(1, 10, "soak-pid-10")])
    story.request(2, "echo", {}, [(10.4, 10.5, "soak-pid-12")])  # queued at 9.9, claimed by the new worker
    kill = Fault("supervisor_kill", 1.5, 0.2, began=T0 + 1.5, ended=T0 + 1.7)
    seconds, censored, busy = recovery_seconds(kill, story.changes, observed_until=T0 + 30)
    assert (round(seconds, 2), censored, busy) == (0.4, False, 1)

    # The same lane, but the next request is still unclaimed at the end of the run: censored, from 10 s.
    stuck = Story()
    stuck.request(1, "echo", {"delay_ms": 9000}, [(1, 10, "soak-pid-10")])
    stuck.request(2, "echo", {}, [(25, None, "soak-web")])  # queued at 24.5: no work at 10 s
    stuck.request(3, "echo", {}, [(9.5, None, "soak-web")])  # queued at 9: waiting when the job ended
    stuck.changes = [c for c in stuck.changes if not (c.op == "update" and c.app == "soak-web")]  # never claimed
    seconds, censored, busy = recovery_seconds(kill, stuck.changes, observed_until=T0 + 30)
    assert (round(seconds, 2), censored, busy) == (20.0, True, 1)

    # A job that finished before the fault ended is no excuse: the clock starts at the fault's end.
    early = Story()
    early.request(1, "echo", {}, [(1, 1.6, "soak-pid-10")])
    early.request(2, "echo", {}, [(4.7, 4.8, "soak-pid-12")])
    early.changes = [replace(c, at=T0 + 1.2) if c.op == "insert" and c.request_id == 2 else c
                     for c in early.changes]  # queued at 1.2, before the fault ended
    seconds, _, busy = recovery_seconds(kill, early.changes, observed_until=T0 + 30)
    assert (round(seconds, 2), busy) == (3.0, 1)
