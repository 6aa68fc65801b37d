"""report.export: the history as CSV or JSON, kept in the database, downloadable by its owner only."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from sqlalchemy import insert, select

from tests.conftest import PASSWORD


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_exports_the_history_as_csv_and_json(app, client, make_user, make_token, lane_of, start_worker):
    alice, bob = make_user("alice"), make_user("bob")
    lane = lane_of(alice)
    message = 'say "hi", then\nleave'
    history = [
        lane.submit("echo", {"message": message}),
        lane.submit("ledger.withdraw", {"amount": 5}),
        lane.submit("ledger.deposit", {"amount": 7, "memo": "pocket money"}),
    ]
    lane_of(bob).submit("echo", {"message": "bob's, not alice's"})
    csv_export = lane.submit("report.export", {"format": "csv"})
    json_export = lane.submit("report.export", {"format": "json"})
    start_worker()

    csv_row, json_row = lane.wait_ended([csv_export, json_export])
    assert csv_row.status == "finished" and csv_row.progress == 100
    assert csv_row.result == {"download": f"/downloads/{csv_export}", "rows": 4}
    assert json_row.result == {"download": f"/downloads/{json_export}", "rows": 5}

    token = make_token(alice)
    response = client.get(csv_row.result["download"], headers=bearer(token))
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == f"attachment; filename=lanes-history-{csv_export}.csv"
    table = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    header = response.get_data(as_text=True).splitlines()[0].split(",")
    assert header[0] == "id"
    assert [int(record["id"]) for record in table] == [*history, csv_export]  # oldest first, alice's only
    assert [record["status"] for record in table] == ["finished", "failed", "finished", "started"]
    echo, withdraw, deposit, itself = table
    assert (echo["type"], json.loads(echo["payload"]), json.loads(echo["result"])) == (
        "echo", {"message": message}, {"message": message},
    )
    assert (withdraw["error_code"], withdraw["result"]) == ("insufficient_funds", "")
    assert json.loads(deposit["payload"]) == {"amount": 7, "memo": "pocket money"}
    assert json.loads(deposit["result"]) == {"balance": 7}
    assert echo["attempts"] == "1" and echo["created_at"].endswith("Z") and echo["ended_at"]
    assert itself["type"] == "report.export" and itself["ended_at"] == ""

    response = client.get(json_row.result["download"], headers=bearer(token))
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Content-Disposition"] == f"attachment; filename=lanes-history-{json_export}.json"
    document = response.get_json()
    assert document["rows"] == 5
    requests = document["requests"]
    assert [record["id"] for record in requests] == [*history, csv_export, json_export]
    assert requests[1]["error_code"] == "insufficient_funds"
    assert requests[3]["result"] == {"download": f"/downloads/{csv_export}", "rows": 4}
    assert requests[3]["status"] == "finished" and requests[4]["status"] == "started"


def test_a_long_history_is_read_in_batches_with_progress(app, make_user):
    from jobs.context import JobContext
    from jobs.report import BATCH_SIZE, export
    from webapp.extensions import db
    from webapp.lanes.service import submit_request
    from webapp.models import ExportFile, LaneRequest

    user_id = make_user("alice")
    now = datetime.now(UTC)
    past = [
        {"user_id": user_id, "type": "echo", "payload": {"message": str(i)}, "status": "finished",
         "result": {"message": str(i)}, "attempts": 1, "created_at": now, "started_at": now, "ended_at": now}
        for i in range(2 * BATCH_SIZE + 234)
    ]
    reports = []
    with app.app_context():
        db.session.execute(insert(LaneRequest), past)
        db.session.commit()
        request_id = submit_request(user_id, "report.export", {"format": "json"}).request.id
        context = JobContext(
            user_id=user_id, request_id=request_id, session=db.session,
            report_progress=lambda percent, message: reports.append((percent, message)),
        )
        result = export(context, {"format": "json"})
        db.session.commit()
        again = export(context, {"format": "json"})  # a re-run replaces the file
        db.session.commit()
        files = db.session.scalars(select(ExportFile).where(ExportFile.user_id == user_id)).all()

    total = len(past) + 1
    assert result == again == {"download": f"/downloads/{request_id}", "rows": total}
    assert len(files) == 1
    records = json.loads(files[0].content)["requests"]
    assert [record["payload"] for record in records[:3]] == [{"message": "0"}, {"message": "1"}, {"message": "2"}]
    assert [record["id"] for record in records] == sorted(record["id"] for record in records)
    assert len({record["id"] for record in records}) == total and records[-1]["id"] == request_id
    assert reports[0] == (int(90 * BATCH_SIZE / total), f"read {BATCH_SIZE} of {total:,} requests")
    assert reports[-1] == (95, "saving the file")


def test_an_unknown_format_is_refused(app, make_user):
    import pytest

    from webapp.errors import InvalidPayload
    from webapp.lanes.service import submit_request

    user_id = make_user("alice")
    for payload in ({"format": "xml"}, {}, {"format": "csv", "rows": 10}):
        with app.app_context(), pytest.raises(InvalidPayload):
            submit_request(user_id, "report.export", payload)


def exported(app, lane, user_id: int, file_format: str = "csv") -> int:
    """Run an export in-process (no worker needed to test the download) and return its request id."""
    from webapp.lanes.execution import run_request

    request_id = lane.submit("report.export", {"format": file_format})
    with app.app_context():
        run_request(request_id, user_id)
    assert lane.row(request_id).status == "finished"
    return request_id


def test_the_owner_downloads_by_session_or_by_token(app, client, browser, make_user, make_token, lane_of):
    alice = make_user("alice")
    request_id = exported(app, lane_of(alice), alice)

    by_token = client.get(f"/downloads/{request_id}", headers=bearer(make_token(alice)))
    assert by_token.status_code == 200
    assert by_token.get_data(as_text=True).splitlines()[0].startswith("id,type,status")

    assert browser.login("alice").status_code == 302
    by_session = browser.client.get(f"/downloads/{request_id}")
    assert by_session.status_code == 200
    assert by_session.headers["Content-Disposition"].startswith("attachment;")
    assert by_session.data == by_token.data


def test_nobody_else_gets_the_file(app, client, browser, make_user, make_token, lane_of):
    alice, bob = make_user("alice"), make_user("bob")
    request_id = exported(app, lane_of(alice), alice)

    response = client.get(f"/downloads/{request_id}", headers=bearer(make_token(bob)))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    for unknown in (request_id + 1, 2**63, 10**30):  # past any BIGINT id too: a 404, not a database error
        assert client.get(f"/downloads/{unknown}", headers=bearer(make_token(alice))).status_code == 404

    assert browser.login("bob").status_code == 302
    page = browser.client.get(f"/downloads/{request_id}")
    assert page.status_code == 404 and page.mimetype == "text/html"


def test_a_download_without_credentials_asks_for_them(app, client, browser, make_user, lane_of):
    alice = make_user("alice")
    request_id = exported(app, lane_of(alice), alice)

    anonymous = browser.client.get(f"/downloads/{request_id}")
    assert anonymous.status_code == 302
    login_page = anonymous.headers["Location"]
    assert login_page == f"/auth/login?next=%2Fdownloads%2F{request_id}"
    signed_in = browser.client.post(
        login_page, data={"username": "alice", "password": PASSWORD, "csrf_token": browser.csrf(login_page)}
    )
    assert signed_in.headers["Location"] == f"/downloads/{request_id}"  # back to the file after signing in
    assert browser.client.get(signed_in.headers["Location"]).status_code == 200

    for header in (f"Bearer lanes_{'x' * 40}", "Bearer ", f"Basic {'x' * 20}"):
        response = client.get(f"/downloads/{request_id}", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.get_json()["error"]["code"] == "unauthorized"
