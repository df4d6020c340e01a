"""Bounded writes (issue 12; docs/operations.md, "Slow and stuck clients").

A stream writes one response at a time and waits for gRPC to accept it; a client that stops reading lets
HTTP/2 flow control fill up and the write never completes. Because every stream has at most that one
response in flight and its snapshots coalesce to the latest (stream.py), such a client holds only that one
response; this bound ends its stream after `timeout_s` so it does not hold even that forever.
"""

from __future__ import annotations

import asyncio

import grpc


async def write_within(context: grpc.aio.ServicerContext[object, object], payload: bytes,
                       timeout_s: float) -> bool:
    """Write `payload`; False when the client has not taken it within `timeout_s` (0: wait forever)."""
    if timeout_s <= 0:
        await context.write(payload)
        return True
    try:
        async with asyncio.timeout(timeout_s):
            await context.write(payload)
    except TimeoutError:
        return False
    return True
