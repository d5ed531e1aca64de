"""Shadow labelling: the deployment's own traffic says where local is as good as the cloud.

For a share of `auto` requests (most of them near the thresholds, where a label changes a routing
decision), after the client has its answer, the same request goes to the other route in the
background; a judge says which answer was better, and the pair becomes a training row in the format
`qroute route train` reads (`id`, `messages`, `weak` = local's result, `strong` = the cloud's, plus
route, score, models, judge, verdict, time). Never on the request path: a client's answer is never
slowed or changed. Capped by a spend per day and a number in flight; over either, it is skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from gateway.judge import judge_pair
from gateway.redis_link import RedisLink
from gateway.settings import ShadowConfig
from router.decide import Thresholds
from router.routes import CLOUD, LOCAL, Route
from textkit.conversation import read_conversation

log = logging.getLogger("qroute.shadow")
BINS = 20
NEAR = 0.1  # a score this close to a threshold is sampled NEAR_WEIGHT times as often as the rest
NEAR_WEIGHT = 4.0


@dataclass(frozen=True)
class ShadowAnswer:
    text: str
    model: str
    cost_cny: float


class ShadowSkipped(RuntimeError):
    """A backend has no room for a shadow request now (no free slot, or its breaker is open)."""


class ShadowHost(Protocol):
    """What shadowing needs from the gateway: an answer on a given route, and a judge's reply."""

    async def shadow_answer(self, route: Route, data: dict[str, Any]) -> ShadowAnswer: ...

    async def judge_reply(self, messages: list[dict[str, str]]) -> tuple[str, float]: ...


@dataclass
class Job:
    request_id: str
    route: Route  # where the client's answer came from
    score: float
    data: dict[str, Any]  # the request as sent upstream (grounded)
    answer: str  # the client's answer
    model: str


def weight(score: float, thresholds: Thresholds) -> float:
    near = min(abs(score - thresholds.t1), abs(score - thresholds.t2)) <= NEAR
    return NEAR_WEIGHT if near else 1.0


class Shadow:
    def __init__(self, config: ShadowConfig, host: ShadowHost, link: RedisLink,
                 record: Callable[[str, float, str, str], None], rng: random.Random | None = None) -> None:
        self.config = config
        self.host = host
        self.link = link
        self._record = record  # metrics: (event, cny, score band, verdict)
        self._rng = rng or random.Random()
        self._scores = [1.0] * BINS  # a decaying histogram of auto scores, for the sampling's normaliser
        self.in_flight = 0
        self._day = ""
        self.spent_today = 0.0

    @property
    def enabled(self) -> bool:
        return self.config.share > 0

    def wants(self, score: float, thresholds: Thresholds) -> bool:
        """Sample this auto request? The share holds on average; requests near a threshold are
        NEAR_WEIGHT times likelier than the rest."""
        if not self.enabled:
            return False
        if self.config.share >= 1.0:
            return True  # everything: no weighting can add to it
        index = min(int(score * BINS), BINS - 1)
        self._scores = [c * 0.999 for c in self._scores]
        self._scores[index] += 1.0
        total = sum(self._scores)
        mean_weight = sum(c * weight((i + 0.5) / BINS, thresholds) for i, c in enumerate(self._scores)) / total
        chance = min(1.0, self.config.share * weight(score, thresholds) / mean_weight)
        return self._rng.random() < chance

    def _budget_left(self) -> bool:
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        if today != self._day:
            self._day, self.spent_today = today, 0.0
        return self.spent_today < self.config.max_spend_cny_per_day

    def submit(self, job: Job, spawn: Callable[[Awaitable[Any]], None]) -> None:
        """Run the job in the background, unless the caps say skip."""
        if self.in_flight >= self.config.max_concurrent:
            self._record("skipped_busy", 0.0, "", "")
            return
        if not self._budget_left():
            self._record("skipped_budget", 0.0, "", "")
            return
        self.in_flight += 1
        self._record("sent", 0.0, "", "")
        spawn(self._run(job))

    async def _run(self, job: Job) -> None:
        try:
            other: Route = CLOUD if job.route != CLOUD else LOCAL
            shadow = await self.host.shadow_answer(other, job.data)
            self._spend(shadow.cost_cny)
            local, cloud = (job.answer, shadow.text) if other == CLOUD else (shadow.text, job.answer)
            request = read_conversation(job.data.get("messages")).ask

            async def ask(messages: list[dict[str, str]]) -> str:
                reply, cost = await self.host.judge_reply(messages)
                self._spend(cost)
                self._record("judge_call", cost, "", "")
                return reply

            judged = await judge_pair(ask, self.config.judge.method, request, local, cloud)
            if judged is None:
                self._record("unreadable", 0.0, "", "")
                return
            local_model, cloud_model = (job.model, shadow.model) if other == CLOUD else (shadow.model, job.model)
            await self._write(self._row(job, judged.verdict, local_model, cloud_model))
            self._record("judged", 0.0, band_of(job.score), judged.verdict)
        except ShadowSkipped as exc:
            self._record("skipped_busy", 0.0, "", "")
            log.info("shadow request %s skipped: %s", job.request_id, exc)
        except Exception as exc:  # a shadow failure is never the client's problem: count it, log it once
            self._record("failed", 0.0, "", "")
            log.warning("shadow request %s failed: %s: %s", job.request_id, type(exc).__name__, exc)
        finally:
            self.in_flight -= 1

    def _spend(self, cny: float) -> None:
        self.spent_today += cny
        self._record("spend", cny, "", "")

    def _row(self, job: Job, verdict: str, local_model: str, cloud_model: str) -> dict[str, Any]:
        weak, strong = {"local": (1.0, 0.0), "cloud": (0.0, 1.0), "tie": (1.0, 1.0)}[verdict]
        messages = job.data.get("messages")
        row: dict[str, Any] = {
            "id": job.request_id, "messages": messages if self.config.store_messages else None,
            "weak": weak, "strong": strong, "verdict": verdict, "route": job.route, "score": round(job.score, 6),
            "local_model": local_model, "cloud_model": cloud_model,
            "judge": f"{self.config.judge.kind}:{self.config.judge.method}",
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if not self.config.store_messages:
            row["messages_sha256"] = hashlib.sha256(orjson.dumps(messages)).hexdigest()
        return row

    async def _write(self, row: dict[str, Any]) -> None:
        line = orjson.dumps(row)
        if self.config.out == "redis" and self.link.configured:
            async def add(client: Any) -> bool:
                await client.xadd(self.link.key("shadow"), {"row": line}, maxlen=1_000_000, approximate=True)
                return True

            if await self.link.call(add, False):
                return
            log.warning("shadow row not written: redis is not answering")
            return
        path = Path(self.config.out)

        def append() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as fh:
                fh.write(line + b"\n")

        await asyncio.to_thread(append)


def band_of(score: float) -> str:
    """The score's tenth, as a bounded label: 0.0-0.1 ... 0.9-1.0."""
    low = min(int(score * 10), 9) / 10
    return f"{low:.1f}-{low + 0.1:.1f}"
