"""The console: submit requests from a form, watch the lane, read one request, page through history."""

from __future__ import annotations

from flask import Blueprint, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from jobs.registry import JobType, all_job_types, get_job_type
from webapp import errors
from webapp.auth.routes import safe_next
from webapp.console.forms import PayloadForm
from webapp.ids import parse_id
from webapp.lanes import request_logs, service
from webapp.models import QUEUED, STATUSES, TERMINAL_STATUSES

bp = Blueprint("console", __name__)

DEFAULT_JOB_TYPE = "echo"
RECENT_RESULTS = 20
PENDING_SHOWN = 100  # a lane may hold 1000; the page lists the next ones to run
HISTORY_PAGE = 50


@bp.get("/")
def root():
    if current_user.is_authenticated:
        return redirect(url_for("console.index"))
    return redirect(url_for("auth.login"))


@bp.get("/console")
@login_required
def index():
    """The console; ``?rerun=<id>`` pre-fills the form with that request's type and payload (nothing is sent)."""
    rerun = request.args.get("rerun")
    if rerun is not None:
        original = service.get_request(current_user.id, rerun)
        job_type = get_job_type(original.type)
        if job_type is None:
            raise errors.NotFound(f"There is no job type named {original.type!r} any more.")
        return render_console(job_type, PayloadForm(job_type, data=original.payload), rerun_of=original)
    name = request.args.get("type") or default_job_type_name()
    job_type = get_job_type(name)
    if job_type is None:
        raise errors.NotFound(f"There is no job type named {name!r}.")
    return render_console(job_type, PayloadForm(job_type))


@bp.get("/console/lane")
@login_required
def lane_fragment():
    """The lane part of the console alone: the live layer fetches it when events arrive or it reconnects."""
    response = make_response(render_template("console/_lane.html", lane=lane_view(current_user.id)))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/console/requests")
@login_required
def submit():
    name = request.form.get("type", "")
    job_type = get_job_type(name)
    if job_type is None:
        form = PayloadForm(get_job_type(default_job_type_name()))
        form.form_errors.append(errors.UnknownJobType(f"Unknown job type: {name!r}.").message)
        return render_console(form.job_type, form, errors.UnknownJobType.status)

    form = PayloadForm(job_type, request.form)
    payload = form.payload()
    if payload is None:
        return render_console(job_type, form, errors.InvalidPayload.status)
    try:
        submitted = service.submit_request(current_user.id, job_type.name, payload)
    except errors.InvalidPayload as problem:
        form.add_problems(problem.details.get("fields") or {"": problem.message})
        return render_console(job_type, form, problem.status)
    except (errors.LaneFull, errors.RateLimited, errors.UnknownJobType) as problem:
        form.form_errors.append(problem.message)
        return render_console(job_type, form, problem.status, problem.headers)
    row = submitted.request
    flash_about(row, f"Request #{row.id} queued (position {submitted.position}).", "success")
    return redirect(url_for("console.index", type=job_type.name))


@bp.post("/console/requests/<id:request_id>/cancel")
@login_required
def cancel(request_id: int):
    try:
        row, done = service.cancel_request(current_user.id, request_id)
    except errors.NotCancelable as refusal:
        flash(f"Request #{request_id} was not canceled: {refusal.message}", "error")
    else:
        if done:
            flash_about(row, f"Request #{row.id} canceled.", "success")
        else:
            flash_about(row, f"Request #{row.id} is running; it was asked to stop.", "info")
    return redirect(safe_next(request.form.get("next")))


@bp.get("/console/requests/<id:request_id>")
@login_required
def detail(request_id: int):
    row = service.get_request(current_user.id, request_id)
    response = make_response(render_template(
        "console/request.html", row=row, position=service.position_of(row), log=request_logs.read_log(row),
    ))
    response.headers["Cache-Control"] = "no-store"  # the live layer re-reads it
    return response


@bp.get("/console/history")
@login_required
def history():
    status, type_name, before = history_filters(request.args)
    page = service.list_requests(current_user.id, status=status, type_name=type_name, limit=HISTORY_PAGE, before=before)
    return render_template(
        "console/history.html", page=page, status=status, type_name=type_name, before=before,
        statuses=STATUSES, job_types=all_job_types(),
    )


def history_filters(args) -> tuple[str | None, str | None, int | None]:
    """The history page's query (status, type, cursor), or ``InvalidRequest`` naming what is wrong."""
    status = args.get("status") or None
    if status is not None and status not in STATUSES:
        raise errors.InvalidRequest(f"Unknown status {status!r}; choose one of {', '.join(STATUSES)}.")
    type_name = args.get("type") or None
    if type_name is not None and get_job_type(type_name) is None:
        raise errors.InvalidRequest(f"Unknown job type {type_name!r}.")
    before = args.get("before") or None
    if before is not None:
        before = parse_id(before)
        if before is None:
            raise errors.InvalidRequest("The page cursor 'before' must be a request id (a positive whole number).")
    return status, type_name, before


def flash_about(row, message: str, category: str) -> None:
    """A message about one request in its current state: the page's live layer keeps it in step."""
    flash(message, f"{category} request:{row.id}:{row.status}")


def default_job_type_name() -> str:
    if get_job_type(DEFAULT_JOB_TYPE) is not None:
        return DEFAULT_JOB_TYPE
    return all_job_types()[0].name


def render_console(job_type: JobType, form: PayloadForm, status: int = 200, headers: dict | None = None,
                   rerun_of=None):
    html = render_template(
        "console/index.html", job_types=all_job_types(), job_type=job_type, form=form,
        lane=lane_view(current_user.id), rerun_of=rerun_of,
    )
    return html, status, headers or {}


def lane_view(user_id: int) -> dict:
    """What the lane part of the console shows: running, the next pending in order, recent results."""
    state = service.lane_state(user_id)
    running = service.get_request(user_id, state["running"]) if state["running"] else None
    pending, positions = [], {}
    if state["pending"]:
        shown = state["pending"][:PENDING_SHOWN]
        # The first ``shown`` queued requests are exactly the queued ones with an id up to the last shown.
        page = service.list_requests(user_id, status=QUEUED, limit=len(shown), before=shown[-1] + 1)
        pending, positions = list(reversed(page.requests)), page.positions
    recent = service.list_requests(user_id, limit=RECENT_RESULTS + state["length"]).requests
    results = [row for row in recent if row.status in TERMINAL_STATUSES][:RECENT_RESULTS]
    return {
        "name": state["name"],
        "length": state["length"],
        "running": running,
        "pending": pending,
        "positions": positions,
        "more_pending": len(state["pending"]) - len(pending),
        "results": results,
    }
