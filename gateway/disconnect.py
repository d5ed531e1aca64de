"""Cancel a request's work when its client leaves before the answer starts.

Starlette does not cancel an endpoint whose client disconnects: a non-streaming request (or a stream
still waiting for its first token) would hold its upstream request, its connection from the pool and
its breaker pass until the upstream finished. `unless_client_leaves` watches the connection beside the
work and cancels the work, and with it the upstream request, at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request

from gateway.errors import ClientGone

T = TypeVar("T")


async def _disconnected(receive: Any) -> None:
    """Returns when the client has gone (the body has been read already, so nothing else arrives)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """The result of `work`, awaited in this task (no hop: a stream starts as soon as it is primed);
    ClientGone (499, outcome `cancelled`) once the client has left and the work has been cancelled."""
    current = asyncio.current_task()
    assert current is not None
    left = False

    async def watch() -> None:
        nonlocal left
        await _disconnected(request.receive)
        left = True
        current.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not left:
            raise  # cancelled from outside (shutdown): not ours to turn into an answer
        current.uncancel()
        raise ClientGone("The client closed the connection before the answer was ready.") from None
    finally:
        watcher.cancel()  # not awaited: it ends on its own, and the answer starts without a hop
