"""What the raw SotW and delta test clients share: one bidirectional xDS call fed from an outbox and read
by one background task into an inbox (cancelling a pending `read()` would cancel the whole call)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

import grpc

NO_RESPONSE_WINDOW_S = 0.4  # "expect no response" window; Istio uses 50 ms, Python needs more slack

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class RawStream(Generic[Req, Resp]):
    def __init__(self, response_type: type[Resp]) -> None:
        self._response_type = response_type
        self._outbox: asyncio.Queue[Req | None] = asyncio.Queue()
        self._inbox: asyncio.Queue[object] = asyncio.Queue()
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None

    def _start(self, call: Any) -> None:
        """Keep the call made from `self._requests()` and start reading it."""
        self._call = call
        self._reader = asyncio.get_running_loop().create_task(self._read_all())

    async def _read_all(self) -> None:
        try:
            while True:
                message = await self._call.read()
                self._inbox.put_nowait(message)
                if message is grpc.aio.EOF:
                    return
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            self._inbox.put_nowait(exc)

    async def _requests(self) -> AsyncIterator[Req]:
        while True:
            item = await self._outbox.get()
            if item is None:
                return
            yield item

    async def _next_response(self, timeout_s: float) -> Resp:
        response = await asyncio.wait_for(self._inbox.get(), timeout_s)
        assert response is not grpc.aio.EOF, "stream ended"
        assert not isinstance(response, BaseException), f"stream failed: {response!r}"
        assert isinstance(response, self._response_type)
        return response

    async def expect_silence(self, window_s: float = NO_RESPONSE_WINDOW_S) -> None:
        try:
            item = await asyncio.wait_for(self._inbox.get(), window_s)
        except TimeoutError:
            return
        raise AssertionError(f"expected no response, got {item!r}")

    async def error(self, timeout_s: float = 5.0) -> grpc.aio.AioRpcError:
        item = await asyncio.wait_for(self._inbox.get(), timeout_s)
        assert isinstance(item, grpc.aio.AioRpcError), f"expected the stream to fail, got {item!r}"
        return item

    async def status(self, timeout_s: float = 5.0) -> grpc.StatusCode:
        code: grpc.StatusCode = await asyncio.wait_for(self._call.code(), timeout_s)
        return code

    def _shutdown(self) -> None:
        self._outbox.put_nowait(None)
        self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
