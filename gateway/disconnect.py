"""Cancel a request's work when its client leaves before the answer starts.

Starlette does not cancel an endpoint whose client disconnects: a non-streaming request (or a stream
still waiting for its first token) would hold its upstream request, its connection from the pool and
its breaker pass until the upstream finished. `unless_client_leaves` watches the connection beside the
work and cancels the work, and with it the upstream request, at once.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    """The result of `work`; ClientGone (499, outcome `cancelled`) once it is cancelled because the client left."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
    if task.cancelled() or (not task.done()):
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientGone("The client closed the connection before the answer was ready.")
    return task.result()
