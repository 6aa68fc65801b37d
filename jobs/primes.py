"""``primes.count``: how many primes are <= limit, by a segmented sieve of Eratosthenes."""

from __future__ import annotations

from collections.abc import Iterator
from math import isqrt

from jobs.context import JobContext
from jobs.registry import job_type

MAX_LIMIT = 10**8
# Odd numbers per segment: small enough that progress and cancel checks come every few tens of
# milliseconds, large enough that the per-segment loop over the base primes stays cheap.
SEGMENT_ODDS = 1 << 20
_ZEROS = bytes(SEGMENT_ODDS)


@job_type(
    "primes.count",
    title="Count primes up to a limit",
    schema={
        "properties": {
            "limit": {"type": "integer", "minimum": 2, "maximum": MAX_LIMIT, "title": "Limit"},
        },
        "required": ["limit"],
    },
    timeout=300,
    cancelable=True,
)
def count(ctx: JobContext, payload: dict) -> dict:
    limit = payload["limit"]
    segments = -(-((limit + 1) // 2) // SEGMENT_ODDS)
    ctx.log(f"Counting primes up to {limit:,}: a sieve of the odd numbers in {segments:,} "
            f"segment{'s' if segments != 1 else ''} of up to {2 * SEGMENT_ODDS:,} numbers.")
    total = 0
    for number, (primes_in_segment, checked) in enumerate(sieve_segments(limit), start=1):
        total += primes_in_segment
        ctx.check_canceled()
        ctx.log(f"Segment {number:,} of {segments:,}: checked up to {checked:,}, {total:,} primes so far.")
        ctx.progress(100 * checked / limit, f"checked {checked:,} of {limit:,}")
    ctx.log(f"Done: {total:,} primes up to {limit:,}.")
    return {"count": total}


def sieve_segments(limit: int) -> Iterator[tuple[int, int]]:
    """Yield (primes found in the segment, numbers checked so far) for consecutive segments up to ``limit``.

    Only odd numbers are sieved: index ``i`` of the whole range stands for ``2 * i + 1``.
    """
    if limit < 2:
        yield 0, limit
        return
    base_primes = _odd_primes_up_to(isqrt(limit))
    odds = (limit + 1) // 2  # 1, 3, 5, ... <= limit
    for low in range(0, odds, SEGMENT_ODDS):
        high = min(low + SEGMENT_ODDS, odds)
        size = high - low
        segment = bytearray(b"\x01") * size
        if low == 0:
            segment[0] = 0  # 1 is not prime; 2, the only even prime, is counted below
        first_number = 2 * low + 1
        last_number = 2 * high - 1
        for prime in base_primes:
            square = prime * prime
            if square > last_number:
                break
            # The first odd multiple of ``prime`` in the segment, never below prime² (smaller
            # multiples have a smaller factor that already struck them).
            start = max(square, -(-first_number // prime) * prime)
            if start % 2 == 0:
                start += prime
            index = (start - first_number) // 2
            if index < size:
                segment[index::prime] = _ZEROS[: (size - 1 - index) // prime + 1]
        found = segment.count(1) + (1 if low == 0 else 0)
        yield found, limit if high == odds else last_number


def _odd_primes_up_to(limit: int) -> list[int]:
    """The odd primes <= ``limit`` (a small plain sieve; ``limit`` is at most 10^4 here)."""
    if limit < 3:
        return []
    is_prime = bytearray(b"\x01") * (limit + 1)
    is_prime[0:2] = b"\x00\x00"
    for number in range(2, isqrt(limit) + 1):
        if is_prime[number]:
            is_prime[number * number :: number] = bytes(len(range(number * number, limit + 1, number)))
    return [number for number in range(3, limit + 1, 2) if is_prime[number]]
