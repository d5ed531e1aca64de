"""Routing thresholds that ops change at run time: validated, logged, kept on disk so they
survive a restart, and re-read when the file changes, so every worker process of one gateway
(`qroute serve --workers N`) follows a change made through any of them within a second."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from router.decide import Thresholds

log = logging.getLogger("qroute.router")


class ThresholdStore:
    def __init__(self, initial: Thresholds, state_file: str | None) -> None:
        self.path = Path(state_file) if state_file else None
        self.current = initial
        self._seen = self._stamp()
        stored = self._read()
        if stored is not None and stored != initial:
            log.warning("router thresholds t1=%.4f t2=%.4f from %s override the config's t1=%.4f t2=%.4f",
                        stored.t1, stored.t2, self.path, initial.t1, initial.t2)
            self.current = stored

    def _stamp(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat() if self.path is not None else None
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size) if info is not None else None

    def reload_if_changed(self) -> bool:
        """Pick up a change another process wrote; True when the thresholds changed."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return False
        self._seen = stamp
        stored = self._read()
        if stored is None or stored == self.current:
            return False
        log.warning("router thresholds t1=%.4f t2=%.4f read from %s", stored.t1, stored.t2, self.path)
        self.current = stored
        return True

    def _read(self) -> Thresholds | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return Thresholds(float(data["t1"]), float(data["t2"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("ignoring unreadable router state %s: %s", self.path, exc)
            return None

    def apply(self, new: Thresholds, source: str) -> None:
        """A change made elsewhere (another replica, through Redis): kept in the state file too, so a
        restart without Redis starts from it."""
        log.warning("router thresholds t1=%.4f t2=%.4f from %s (were t1=%.4f t2=%.4f)",
                    new.t1, new.t2, source, self.current.t1, self.current.t2)
        self._write(new)
        self.current = new

    def _write(self, new: Thresholds) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".router-state-")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"t1": new.t1, "t2": new.t2}, fh)
            os.replace(tmp, self.path)
            self._seen = self._stamp()
        except OSError as exc:
            log.error("could not keep router thresholds in %s: %s", self.path, exc)

    def update(self, new: Thresholds, who: str) -> Thresholds:
        """Persist first (atomically), then switch: a change that cannot be kept is not made."""
        old = self.current
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".router-state-")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"t1": new.t1, "t2": new.t2}, fh)
            os.replace(tmp, self.path)
            self._seen = self._stamp()
        self.current = new
        log.warning("router thresholds changed by %s: t1 %.4f -> %.4f, t2 %.4f -> %.4f",
                    who, old.t1, new.t1, old.t2, new.t2)
        return new
