"""The router's model, swapped at run time (PUT /admin/router/model, POST /admin/router/rollback).

A new file is loaded and checked in a worker thread before it takes a request; the swap is one
reference change (requests in flight finish on the model they started with); the model it replaced
(and the thresholds, when the swap set new ones) is kept for rollback. Changes are shared through
RouterSync: other replicas load the same path when they see it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from gateway.errors import InvalidRequest
from gateway.router_models import BUNDLED, Loaded, ModelRefused, load_in_thread
from gateway.routing import RouteResolver
from router.decide import Thresholds

log = logging.getLogger("qroute.router")
SetThresholds = Callable[[Thresholds, str], Awaitable[Thresholds]]
Announce = Callable[[str, str, str, str], Awaitable[None]]  # old path, new path, admin id, kind


class ModelSlot:
    def __init__(self, resolver: RouteResolver, path: str | None) -> None:
        self.resolver = resolver
        self.path = path or BUNDLED
        self._previous: Loaded | None = None
        self._set_thresholds: SetThresholds | None = None
        self._announce: Announce | None = None

    def connect(self, set_thresholds: SetThresholds, announce: Announce) -> None:
        """How a change is applied to the thresholds and told to the other replicas (RouterSync)."""
        self._set_thresholds, self._announce = set_thresholds, announce

    async def swap(self, path: str, admin_id: str, thresholds: Thresholds | None = None) -> str:
        """Load and check a model file, then switch to it (with its thresholds, when given: a new model
        scores on its own scale). ModelRefused, and nothing changed, when the file is not usable."""
        loaded = await load_in_thread(path, self.resolver.scorer)
        old = self.path
        self._use(loaded, self.resolver.thresholds.current if thresholds else None)
        if thresholds and self._set_thresholds:
            await self._set_thresholds(thresholds, admin_id)
        if self._announce:
            await self._announce(old, path, admin_id, "model")
        return old

    async def rollback(self, admin_id: str) -> str:
        if self._previous is None:
            raise InvalidRequest("There is no previous router model to roll back to.", code="no_previous_model",
                                 status=409)
        old, back = self.path, self._previous
        self._use(back, None)
        if back.thresholds and self._set_thresholds:
            await self._set_thresholds(back.thresholds, admin_id)
        if self._announce:
            await self._announce(old, back.path, admin_id, "rollback")
        return back.path

    async def follow(self, path: str) -> bool:
        """Another replica switched models: load the same file here (it must be reachable here too)."""
        try:
            self._use(await load_in_thread(path, self.resolver.scorer), None)
        except ModelRefused as exc:
            log.error("not following the shared router model: %s", exc)
            return False
        return True

    def _use(self, loaded: Loaded, thresholds_before: Thresholds | None) -> None:
        self._previous = Loaded(self.resolver.scorer, self.path, thresholds_before)
        self.resolver.scorer = loaded.scorer  # one reference: requests in flight keep the one they have
        self.path = loaded.path
        log.warning("router model is now %s (was %s)", loaded.path, self._previous.path)
