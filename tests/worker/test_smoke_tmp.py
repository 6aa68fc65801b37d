from tests.conftest import wait_until


def test_echo_runs(app, make_user, start_worker):
    from webapp.extensions import db
    from webapp.lanes.service import submit_request
    from webapp.models import LaneRequest

    uid = make_user("alice")
    with app.app_context():
        ids = [submit_request(uid, "echo", {"message": f"m{i}"}).request.id for i in range(5)]
    w = start_worker()

    def done():
        with app.app_context():
            rows = db.session.query(LaneRequest).order_by(LaneRequest.id).all()
            db.session.rollback()
            return all(r.status == "finished" for r in rows) and rows
    rows = wait_until(done, 20)
    print(w.output())
    assert [r.result["message"] for r in rows] == [f"m{i}" for i in range(5)]
