"""The router's model, swapped at run time (PUT /admin/router/model, POST /admin/router/rollback).

A new file is loaded and checked in a worker thread before it takes a request; the swap is one
reference change (requests in flight finish on the model they started with); the model it replaced
and the thresholds in force with it are kept for rollback. Changes are shared through RouterSync, model
and thresholds in one write: other replicas load the same path when they see it."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from gateway.errors import InvalidRequest
from gateway.router_models import BUNDLED, Loaded, ModelRefused, load_in_thread
from gateway.routing import RouteResolver
from router.decide import Thresholds

log = logging.getLogger("qroute.router")


class Sync(Protocol):
    """How a change reaches the other replicas (RouterSync)."""

    lock: asyncio.Lock

    async def changed_model(self, old: str, new: str, admin_id: str, kind: str,
                            thresholds: Thresholds | None) -> str: ...


class ModelSlot:
    def __init__(self, resolver: RouteResolver, path: str | None) -> None:
        self.resolver = resolver
        self.path = path or BUNDLED
        self._previous: Loaded | None = None
        self._sync: Sync | None = None

    def connect(self, sync: Sync) -> None:
        self._sync = sync

    async def swap(self, path: str, admin_id: str, thresholds: Thresholds | None = None) -> tuple[str, str]:
        """Load and check a model file, then switch to it (with its thresholds, when given: a new model
        scores on its own scale). Returns the model replaced and where the change is shared.
        ModelRefused, and nothing changed, when the file is not usable."""
        loaded = await load_in_thread(path, self.resolver.scorer)
        old = self.path
        return old, await self._switch(loaded, thresholds, admin_id, "model")

    async def rollback(self, admin_id: str) -> tuple[str, str]:
        """Back to the model (and the thresholds) in force before the last swap; a second rollback
        undoes the first. Returns the model now in use and where the change is shared."""
        if self._previous is None:
            raise InvalidRequest("There is no previous router model to roll back to.", code="no_previous_model",
                                 status=409)
        back = self._previous
        return back.path, await self._switch(back, back.thresholds, admin_id, "rollback")

    async def _switch(self, loaded: Loaded, thresholds: Thresholds | None, admin_id: str, kind: str) -> str:
        old = self.path
        if self._sync is None:
            self._use(loaded)
            if thresholds is not None:
                self.resolver.thresholds.apply(thresholds, f"admin key {admin_id}")
            return "here only"
        async with self._sync.lock:
            self._use(loaded)
            return await self._sync.changed_model(old, loaded.path, admin_id, kind, thresholds)

    async def follow(self, path: str) -> bool:
        """Another replica switched models: load the same file here (it must be reachable here too)."""
        try:
            self._use(await load_in_thread(path, self.resolver.scorer))
        except ModelRefused as exc:
            log.error("not following the shared router model: %s", exc)
            return False
        return True

    def _use(self, loaded: Loaded) -> None:
        """Keep what is in force now (model and thresholds) for a rollback, then switch."""
        self._previous = Loaded(self.resolver.scorer, self.path, self.resolver.thresholds.current)
        self.resolver.scorer = loaded.scorer  # one reference: requests in flight keep the one they have
        self.path = loaded.path
        log.warning("router model is now %s (was %s)", loaded.path, self._previous.path)
