"""report.export held to limits (issue 8, item 7): a per-user quota, an expiry, files sent in pieces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import requests
from sqlalchemy import insert, select, update

from tests.conftest import wait_until
from tests.jobs.test_report import bearer, exported


def add_history(app, user_id: int, count: int, message_length: int = 10) -> None:
    from webapp.extensions import db
    from webapp.models import LaneRequest

    now = datetime.now(UTC)
    with app.app_context():
        db.session.execute(insert(LaneRequest), [
            {"user_id": user_id, "type": "echo", "payload": {"message": f"{i:06d}" + "x" * message_length},
             "status": "finished", "result": {"message": "ok"}, "attempts": 1, "created_at": now,
             "started_at": now, "ended_at": now}
            for i in range(count)
        ])
        db.session.commit()


def export_files(app, user_id: int) -> list[int]:
    from webapp.extensions import db
    from webapp.models import ExportFile

    with app.app_context():
        ids = list(db.session.scalars(select(ExportFile.request_id).where(ExportFile.user_id == user_id)))
        db.session.remove()
        return ids


def test_an_export_over_the_quota_fails_and_an_expired_one_makes_room(app, client, make_user, make_token, lane_of):
    from webapp.extensions import db
    from webapp.models import ExportFile

    alice = make_user("alice")
    add_history(app, alice, 40)
    app.config["LANES_EXPORT_QUOTA_BYTES"] = 12_000  # room for one export of this history, not two
    lane = lane_of(alice)
    first = exported(app, lane, alice)
    second = lane.submit("report.export", {"format": "csv"})
    from webapp.lanes.execution import run_request

    with app.app_context():
        run_request(second, alice)
    refused = lane.row(second)
    assert refused.status == "failed" and refused.error_code == "job_error"
    assert "over the quota of 12,000" in refused.error_message
    assert export_files(app, alice) == [first]
    token = make_token(alice)
    assert client.get(f"/downloads/{first}", headers=bearer(token)).status_code == 200

    with app.app_context():  # eight days later
        db.session.execute(update(ExportFile).values(created_at=datetime.now(UTC) - timedelta(days=8)))
        db.session.commit()
    expired = client.get(f"/downloads/{first}", headers=bearer(token))
    assert expired.status_code == 404
    assert "expired" in expired.get_json()["error"]["message"]
    third = exported(app, lane, alice)  # the expired file is deleted to make room
    assert export_files(app, alice) == [third]


def test_a_large_export_is_sent_in_pieces_by_gunicorn(app, make_user, make_token, lane_of, start_web):
    from webapp.downloads import PIECE_BYTES
    from webapp.extensions import db
    from webapp.models import ExportFile

    alice = make_user("alice")
    add_history(app, alice, 4000, message_length=200)
    request_id = exported(app, lane_of(alice), alice)
    with app.app_context():
        stored = db.session.get(ExportFile, request_id).content
        db.session.remove()
    assert len(stored) > 3 * PIECE_BYTES
    web = start_web()
    response = requests.get(f"{web.url}/downloads/{request_id}", headers=bearer(make_token(alice)), timeout=30,
                            stream=True)
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(stored)
    body = b"".join(response.iter_content(65536))
    assert body == stored
    assert body.decode().splitlines()[1].split(",")[0].isdigit()


def test_expired_exports_are_deleted_without_waiting_for_their_owners_next_export(
    app, make_user, lane_of, start_worker,
):
    """Bob exports once and never again: a supervisor deletes his file once it has expired; Alice's
    recent one stays."""
    from webapp.extensions import db
    from webapp.models import ExportFile

    alice, bob = make_user("alice"), make_user("bob")
    kept = exported(app, lane_of(alice), alice)
    gone = exported(app, lane_of(bob), bob)
    with app.app_context():
        db.session.execute(update(ExportFile).where(ExportFile.request_id == gone)
                           .values(created_at=datetime.now(UTC) - timedelta(days=8)))
        db.session.commit()
        db.session.remove()

    start_worker()  # a supervisor sweeps expired exports at its first housekeeping, then hourly
    wait_until(lambda: export_files(app, bob) == [], timeout=30, message="bob's expired export to be deleted")
    assert export_files(app, alice) == [kept]
