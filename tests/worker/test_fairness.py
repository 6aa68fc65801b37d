"""Overload: waiting lanes are admitted oldest-first, and a busy lane hands its worker back."""

from __future__ import annotations

from sqlalchemy import select

from tests.conftest import wait_until
from webapp.extensions import db
from webapp.lanes.service import submit_request
from webapp.models import LaneRequest


def rows(app):
    with app.app_context():
        found = db.session.scalars(select(LaneRequest).order_by(LaneRequest.id)).all()
        db.session.expunge_all()
        db.session.rollback()
        return found


def test_a_busy_lane_does_not_starve_the_others(app, make_user, start_worker):
    busy, patient = make_user("busy"), make_user("patient")
    with app.app_context():
        busy_ids = [submit_request(busy, "echo", {"message": f"b{n}", "delay_ms": 150}).request.id for n in range(8)]
        patient_ids = [submit_request(patient, "echo", {"message": f"p{n}"}).request.id for n in range(2)]
    # One lane worker at a time: the two lanes must take turns.
    start_worker(LANES_MAX_WORKERS="1", LANES_FAIR_SHARE="2")

    def all_finished():
        found = rows(app)
        return found if all(row.status == "finished" for row in found) else None

    found = {row.id: row for row in wait_until(all_finished, timeout=40, message="every request to finish")}
    last_busy_start = max(found[i].started_at for i in busy_ids)
    patient_done = max(found[i].ended_at for i in patient_ids)
    assert patient_done < last_busy_start, "the patient user waited for the whole busy lane"
    ran_before_patient = sum(1 for i in busy_ids if found[i].ended_at <= found[patient_ids[0]].started_at)
    assert ran_before_patient <= 2, f"{ran_before_patient} busy jobs ran in a row while another lane waited"
