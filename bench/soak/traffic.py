"""The soak's users: mixed traffic through the JSON API, an Idempotency-Key on every submit.

Each user submits one request at a time (so its requests' ids follow its submit order): ledger
deposits, withdrawals never larger than what it has deposited minus withdrawn so far (so in a
FIFO lane none can fail for funds), numbered echoes, and delayed echoes (a few of 3-10 s, so
that faults find jobs running that outlive a lease). Each payload carries a
tag naming the user and the submit, so a duplicate row is visible. A 503, a 429, a refused or
broken connection and a timeout are retried with the same key; a client timeout is therefore
never a loss by itself: the retry returns the request if the first attempt had made it.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import requests

# Backpressure: a user whose request was queued behind more than this many waits for its lane to
# shrink to half before submitting again. Without it a slow (shared, loaded) machine builds backlogs
# that outlast the drain, and a slow machine would look like a lossy Lanes.
MAX_BACKLOG = 8
CONNECT_TIMEOUT = 3
READ_TIMEOUT = 20  # longer than any fault the soak injects, so a frozen Redis shows as slow, not lost
RETRY_AFTER_CAP = 2.0


@dataclass
class SoakUser:
    index: int
    id: int
    name: str
    token: str


@dataclass
class Submit:
    """One logical submit and every HTTP attempt it took."""

    user: SoakUser
    seq: int
    key: str
    type: str
    payload: dict
    tag: str
    answers: list[str] = field(default_factory=list)  # "202", "503", "connection", "timeout", ...
    request_id: int | None = None
    acked_at: float | None = None  # time.time() when a 200/202 with an id was read
    first_sent: float = 0.0
    position: int | None = None  # place among the queued when acknowledged

    @property
    def acknowledged(self) -> bool:
        return self.request_id is not None


@dataclass
class BadAnswer:
    at: float
    status: int
    key: str
    body: str


class UserTraffic(threading.Thread):
    """One user's submits until ``stop_submitting`` is set; retries each until acknowledged or ``give_up_at``."""

    def __init__(self, base_url: str, user: SoakUser, seed: int, run_id: str, stop_submitting: threading.Event,
                 pause: tuple[float, float]):
        super().__init__(name=f"user-{user.index}", daemon=True)
        self.base_url = base_url
        self.user = user
        self.choices = random.Random(f"{seed}:traffic:{user.index}")  # what is submitted: reproducible
        self.jitter = random.Random(f"{seed}:jitter:{user.index}")  # retry timing: not part of the plan
        self.run_id = run_id
        self.stop_submitting = stop_submitting
        self.give_up_at = float("inf")
        self.pause = pause
        self.submits: list[Submit] = []
        self.bad_answers: list[BadAnswer] = []  # 500s and other answers a correct Lanes never gives
        self.status_counts: dict[str, int] = {}
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only, never through a proxy
        self.session.headers["Authorization"] = f"Bearer {user.token}"
        self.funds = 0  # deposited minus withdrawn, over acknowledged submits
        self.backpressure_waits = 0

    def next_submit(self, seq: int) -> Submit:
        tag = f"{self.run_id}:u{self.user.index}:{seq}"
        roll = self.choices.random()
        if roll < 0.40 or (roll < 0.60 and self.funds == 0):
            kind, payload = "ledger.deposit", {"amount": self.choices.randint(1, 1000), "memo": tag}
        elif roll < 0.60:
            kind, payload = "ledger.withdraw", {"amount": self.choices.randint(1, self.funds), "memo": tag}
        elif roll < 0.84:
            kind, payload = "echo", {"message": tag}
        elif roll < 0.95:
            kind, payload = "echo", {"message": tag, "delay_ms": self.choices.randint(200, 1500)}
        else:  # long enough to be running when a fault hits, and to outlive a lease
            kind, payload = "echo", {"message": tag, "delay_ms": self.choices.randint(3000, 10000)}
        return Submit(self.user, seq, f"soak-{tag}", kind, payload, tag)

    def run(self) -> None:
        seq = 0
        while not self.stop_submitting.is_set():
            seq += 1
            submit = self.next_submit(seq)
            self.submits.append(submit)
            self.send(submit)
            if not submit.acknowledged:
                return  # gave up (the run is over): nothing after it could keep FIFO meaning
            if submit.type == "ledger.deposit":
                self.funds += submit.payload["amount"]
            elif submit.type == "ledger.withdraw":
                self.funds -= submit.payload["amount"]
            self.stop_submitting.wait(self.choices.uniform(*self.pause))
            if (submit.position or 0) > MAX_BACKLOG:
                self.wait_for_lane(MAX_BACKLOG // 2)
        self.session.close()

    def wait_for_lane(self, length: int) -> None:
        """Until the lane holds at most ``length`` requests (or the traffic stops); errors just wait."""
        self.backpressure_waits += 1
        while not self.stop_submitting.wait(0.5):
            try:
                response = self.session.get(f"{self.base_url}/api/v1/lane", timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
                if response.status_code == 200 and response.json().get("length", 0) <= length:
                    return
                if response.status_code >= 500 and response.status_code != 503:
                    self.bad_answers.append(BadAnswer(time.time(), response.status_code, "GET /api/v1/lane",
                                                      response.text[:300]))
            except (requests.RequestException, ValueError):
                self._reset_session()

    def send(self, submit: Submit) -> None:
        """POST until a 200/202 names the request, or ``give_up_at`` passes."""
        submit.first_sent = time.time()
        body = {"type": submit.type, "payload": submit.payload}
        tries = 0
        while time.time() < self.give_up_at:
            tries += 1
            wait = min(RETRY_AFTER_CAP, 0.1 * 2 ** min(tries, 5)) * self.jitter.uniform(0.5, 1.0)
            try:
                response = self.session.post(f"{self.base_url}/api/v1/requests", json=body,
                                             headers={"Idempotency-Key": submit.key},
                                             timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
            except requests.Timeout:
                self._note(submit, "timeout")
                self._reset_session()
                time.sleep(wait)
                continue
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                # (the second: the web process died while sending the answer; the key makes a retry safe)
                self._note(submit, "connection")
                self._reset_session()
                time.sleep(wait)
                continue
            status = response.status_code
            self._note(submit, str(status))
            if status in (200, 202):
                try:
                    submit.request_id = int(response.json()["id"])
                except (ValueError, KeyError, TypeError):
                    self.bad_answers.append(BadAnswer(time.time(), status, submit.key, response.text[:300]))
                    time.sleep(wait)
                    continue
                submit.acked_at = time.time()
                submit.position = response.json().get("position")
                return
            if status in (503, 429):
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    wait = min(RETRY_AFTER_CAP, float(retry_after))
                time.sleep(wait)
                continue
            # Anything else is an answer Lanes must never give to a valid submit (a 500 above all).
            self.bad_answers.append(BadAnswer(time.time(), status, submit.key, response.text[:300]))
            time.sleep(wait)

    def _note(self, submit: Submit, answer: str) -> None:
        submit.answers.append(answer)
        self.status_counts[answer] = self.status_counts.get(answer, 0) + 1

    def _reset_session(self) -> None:
        # A keep-alive connection to a killed web process is dead: start afresh.
        self.session.close()
        headers = dict(self.session.headers)
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers.update(headers)
