"""BlockingCall: run one blocking call in a daemon thread and await it with a timeout, never two at once.

Why not `asyncio.to_thread`: a call stuck in the kernel (a read from a dead network mount) cannot be killed,
and cancelling the awaiting coroutine leaves the executor's thread stuck; the default executor is joined when
`asyncio.run` ends, so one stuck read would also make the process hang on shutdown. Here the thread is a
daemon, its result is delivered to the loop when (if ever) it comes, and the owner decides what a timeout
means. The owner never starts a second call while one is in flight, so a stuck call is reported, not stacked
(issue 7).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

_T = TypeVar("_T")


class BlockingCall(Generic[_T]):
    """At most one call of a blocking function in flight, awaited with a timeout as often as needed."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._pending: asyncio.Future[_T] | None = None

    @property
    def busy(self) -> bool:
        """Whether a call was started and its result not yet taken by `result`."""
        return self._pending is not None

    def start(self, fn: Callable[[], _T]) -> None:
        if self._pending is not None:
            raise RuntimeError("a call is already in flight")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()

        def settle(value: _T | None, error: BaseException | None) -> None:
            if future.done():  # the owner went away and cancelled it
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)  # type: ignore[arg-type]  # None only together with an error

        def target() -> None:
            value: _T | None = None
            error: BaseException | None = None
            try:
                value = fn()
            except BaseException as e:  # delivered to the awaiting side, which decides
                error = e
            # A closed loop (RuntimeError) means nobody is waiting for this any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, value, error)

        threading.Thread(target=target, name=self._name, daemon=True).start()
        self._pending = future

    async def result(self, timeout_s: float) -> _T:
        """The result (or exception) of the call in flight. TimeoutError when it takes longer than
        `timeout_s`; the call then stays in flight and a later `result` waits for the same call."""
        if self._pending is None:
            raise RuntimeError("no call in flight")
        # asyncio.wait, unlike wait_for, does not cancel the future on timeout.
        done, _ = await asyncio.wait({self._pending}, timeout=timeout_s)
        if not done:
            raise TimeoutError
        future, self._pending = self._pending, None
        return future.result()

    def abandon(self) -> None:
        """Forget the call in flight (the owner is stopping); its thread ends on its own, or with the
        process."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
