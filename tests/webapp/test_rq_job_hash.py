"""The submit path writes a lane's RQ job by hand (``rq_adapter.add_job``): it must be what RQ's own
``enqueue_call`` writes, so that rq-dashboard and ``Job.fetch`` read it as RQ's."""

from __future__ import annotations

import re
import zlib

import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import DefaultSerializer

from webapp.lanes import keys, rq_adapter

TIMESTAMP = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def rq_enqueue(connection, request_id: int, user_id: int, type_name: str, at_front: bool) -> None:
    """The job as RQ itself writes it (what ``add_job`` did before it wrote the hash by hand)."""
    with connection.pipeline() as pipe:
        pipe.multi()
        Queue(keys.lane_name(user_id), connection=connection).enqueue_call(
            rq_adapter.JOB_FUNCTION, args=(request_id, user_id), job_id=str(request_id), timeout=-1,
            at_front=at_front, result_ttl=0, failure_ttl=rq_adapter.FAILED_JOB_TTL,
            description=f"{type_name} #{request_id}", pipeline=pipe,
        )
        pipe.execute()


def add_job(connection, request_id: int, user_id: int, type_name: str, at_front: bool) -> None:
    with connection.pipeline() as pipe:
        pipe.multi()
        rq_adapter.add_job(connection, pipe, request_id, user_id, type_name, at_front=at_front)
        pipe.execute()


def comparable(job_hash: dict[bytes, bytes]) -> dict[bytes, object]:
    """The hash with its timestamps checked for RQ's format and its data unpacked."""
    fields = dict(job_hash)
    for name in (b"created_at", b"enqueued_at"):
        assert TIMESTAMP.match(fields.pop(name)), name
    fields[b"data"] = DefaultSerializer.loads(zlib.decompress(fields[b"data"]))
    return fields


@pytest.mark.parametrize("at_front", [False, True], ids=["back", "front"])
def test_add_job_writes_what_rq_enqueue_call_writes(redis_client, at_front):
    rq_enqueue(redis_client, 501, 7, "echo", at_front=False)  # one already queued in each lane
    add_job(redis_client, 601, 8, "echo", at_front=False)
    rq_enqueue(redis_client, 502, 7, "echo", at_front=at_front)
    add_job(redis_client, 602, 8, "echo", at_front=at_front)

    by_rq = comparable(redis_client.hgetall(keys.rq_job(502)))
    by_hand = comparable(redis_client.hgetall(keys.rq_job(602)))
    by_rq[b"data"] = (by_rq[b"data"][0], None, (602, 8), {})  # the same job of the other request
    by_rq[b"origin"], by_rq[b"description"] = keys.lane_name(8).encode(), b"echo #602"
    assert by_hand == by_rq

    order = [b"502", b"501"] if at_front else [b"501", b"502"]
    assert redis_client.lrange(keys.rq_queue(7), 0, -1) == order
    assert redis_client.lrange(keys.rq_queue(8), 0, -1) == [id.replace(b"5", b"6", 1) for id in order]
    assert redis_client.smembers(keys.RQ_QUEUES) == {keys.rq_queue(7).encode(), keys.rq_queue(8).encode()}


def test_rq_reads_a_job_added_by_hand(redis_client):
    add_job(redis_client, 42, 9, "report", at_front=False)

    job = Job.fetch("42", connection=redis_client)
    assert (job.func_name, job.args, job.kwargs) == (rq_adapter.JOB_FUNCTION, (42, 9), {})
    assert (job.origin, job.description, job.get_status()) == (keys.lane_name(9), "report #42", JobStatus.QUEUED)
    assert (job.timeout, job.result_ttl, job.failure_ttl) == (-1, 0, rq_adapter.FAILED_JOB_TTL)
    assert job.enqueued_at is not None and job.created_at is not None
    assert Queue(keys.lane_name(9), connection=redis_client).job_ids == ["42"]
