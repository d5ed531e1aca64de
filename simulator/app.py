"""A raw ASGI app imitating vLLM's or DashScope's OpenAI-compatible chat API.

Raw ASGI (no framework) keeps the simulator's own cost small, because in benchmarks it is
the upstream every contender shares. Control endpoints under /sim/ let tests change the
behaviour and read back the bodies the upstream received.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

import orjson
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from simulator import wire
from simulator.behaviour import Behaviour
from simulator.vllm_metrics import VllmMetrics

Scope = dict[str, Any]


class _Disconnected(Exception):
    pass


class _Engine:
    """The simulated server's batch, as vLLM schedules one: at most `max_running` requests run (the rest
    wait in line, first come first served, as vLLM's --max-num-seqs makes them), and the running ones share
    `total_tokens_per_s`. With both 0 (the default) a request only counts itself in and out."""

    __slots__ = ("by_model", "queue", "running", "waiting")

    def __init__(self) -> None:
        self.running = 0
        self.queue: deque[asyncio.Future[None]] = deque()
        self.by_model: dict[str, int] = {}  # running or in line, by model
        self.waiting: dict[str, int] = {}  # in line, by model (vllm:num_requests_waiting)

    def rate(self, b: Behaviour) -> float:
        """Tokens per second of each running request now: min(tokens_per_s, total_tokens_per_s / running)."""
        shared = b.total_tokens_per_s / max(self.running, 1)
        return min(b.tokens_per_s, shared) if b.tokens_per_s > 0 else shared

    def enter(self, b: Behaviour, model: str) -> bool:
        """Take a running slot if one is free and nobody waits (no coroutine: the common case is cheap);
        False: `await wait(...)` for one."""
        by_model = self.by_model
        by_model[model] = by_model.get(model, 0) + 1
        if b.max_running <= 0 or (self.running < b.max_running and not self.queue):
            self.running += 1
            return True
        return False

    async def wait(self, b: Behaviour, model: str, disconnected: asyncio.Event | None = None) -> None:
        """Wait in line for a running slot, first come first served; a stream whose client leaves while it
        waits leaves the line (_Disconnected)."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append(turn)
        self.waiting[model] = self.waiting.get(model, 0) + 1
        try:
            if disconnected is None:
                await turn
            else:
                gone = asyncio.ensure_future(disconnected.wait())
                try:
                    await asyncio.wait((turn, gone), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    gone.cancel()
                if not turn.done():
                    raise _Disconnected
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.finish(b, model)  # its slot was handed over as it left: pass it on
            else:
                turn.cancel()
                with contextlib.suppress(ValueError):
                    self.queue.remove(turn)
                self.by_model[model] -= 1
            raise
        finally:
            self.waiting[model] -= 1

    def finish(self, b: Behaviour, model: str) -> None:
        self.running -= 1
        self.by_model[model] -= 1
        if self.queue:
            self.admit(b)

    def running_by_model(self) -> dict[str, int]:
        """Running, by model (vllm:num_requests_running)."""
        return {m: n - self.waiting.get(m, 0) for m, n in self.by_model.items()}

    def admit(self, b: Behaviour) -> None:
        """Hand free slots to the first in line (also after `max_running` changes at run time)."""
        while self.queue and (b.max_running <= 0 or self.running < b.max_running):
            turn = self.queue.popleft()
            if not turn.done():
                self.running += 1
                turn.set_result(None)


class _Clock:
    """When one request's tokens are due: `ttft_s` after it starts running, then a token every 1/rate s.
    With `total_tokens_per_s` the rate is the one at each step (the batch grows and shrinks meanwhile)."""

    __slots__ = ("done", "due", "started")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.due = -1.0  # shared pacing: when the last token paced was due (-1: not started)
        self.done = 0  # shared pacing: tokens paced so far


class SimulatedUpstream:
    def __init__(self, behaviour: Behaviour, record_limit: int = 500) -> None:
        self.behaviour = behaviour
        self.received: deque[dict[str, Any]] = deque(maxlen=record_limit)
        self.stats = {"requests": 0, "completed": 0, "disconnects": 0, "cuts": 0, "errors": 0}
        self.vllm_metrics = VllmMetrics(behaviour.models) if behaviour.flavour == "vllm" else None
        self.engine = _Engine()

    # --- ASGI entry -----------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        body = await self._read_body(receive)
        if path == "/v1/chat/completions" and method == "POST":
            await self._metered_chat(scope, body, receive, send)
        elif path == "/v1/completions" and method == "POST" and self.behaviour.flavour == "vllm":
            await self._text_completion(scope, body, receive, send)
        elif path == "/metrics" and method == "GET" and self.vllm_metrics is not None:
            await self._metrics(send)
        elif path == "/v1/models" and method == "GET":
            data = [{"id": m, "object": "model", "owned_by": self.behaviour.flavour} for m in self.behaviour.models]
            await _json(send, 200, {"object": "list", "data": data})
        elif path in ("/health", "/sim/health"):
            await _json(send, 200, {"status": "ok"})
        elif path == "/sim/config":
            await self._config(method, body, send)
        elif path == "/sim/requests":
            if method == "DELETE":
                self.received.clear()
                self.stats = dict.fromkeys(self.stats, 0)
            await _json(send, 200, {"requests": list(self.received), "stats": self.stats})
        else:
            await _json(send, 404, {"error": {"message": f"no route {method} {path}", "type": "NotFound"}})

    # --- vLLM's own /metrics (vLLM flavour only) ------------------------------------------------
    async def _metered_chat(self, scope: Scope, raw: bytes, receive: Any, send: Any) -> None:
        """The chat call, measured as vLLM measures its requests: running while served, then time to
        first token, end-to-end latency and tokens for an answered one."""
        meter = self.vllm_metrics
        request = meter.begin(raw, self.behaviour, send) if meter is not None else None
        if meter is None or request is None:
            await self._chat(scope, raw, receive, send)
            return
        try:
            await self._chat(scope, raw, receive, request.send)
        finally:
            meter.end(request, self.behaviour)

    async def _metrics(self, send: Any) -> None:
        assert self.vllm_metrics is not None
        payload = self.vllm_metrics.render(self.behaviour, self.engine.running_by_model(), self.engine.waiting)
        await _raw(send, 200, payload, CONTENT_TYPE_LATEST.encode())

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _read_body(receive: Any) -> bytes:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _config(self, method: str, body: bytes, send: Any) -> None:
        if method in ("POST", "PUT", "PATCH"):
            try:
                self.behaviour.update(orjson.loads(body or b"{}"))
            except (KeyError, orjson.JSONDecodeError) as exc:
                await _json(send, 400, {"error": {"message": f"bad sim config: {exc}"}})
                return
            self.engine.admit(self.behaviour)  # a higher max_running lets waiting requests in now
        await _json(send, 200, self.behaviour.as_dict())

    # --- chat ------------------------------------------------------------------------------
    async def _accepted(self, scope: Scope, raw: bytes, send: Any,
                        extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Count, parse and record a generation request; None once it has been answered with an error
        (not JSON, a model not served, or a simulated failure)."""
        b = self.behaviour
        self.stats["requests"] += 1
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await self._error(send, 400, "Invalid JSON body")
            return None
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        record = {"body": body, "authorization": "present" if "authorization" in headers else "absent",
                  "x-request-id": headers.get("x-request-id"), "outcome": "started", **(extra or {})}
        self.received.append(record)
        model = body.get("model", "")
        if not b.serves(model):
            await self._error(send, 404, f"The model `{model}` does not exist.", param="model")
            return None
        if b.should_fail(raw):
            self.stats["errors"] += 1
            record["outcome"] = "error"
            retry_after = b.retry_after_s if b.error_status == 429 and b.retry_after_s > 0 else None
            await self._error(send, b.error_status, f"simulated upstream failure ({b.error_status})",
                              retry_after=retry_after)
            return None
        return body, record

    async def _chat(self, scope: Scope, raw: bytes, receive: Any, send: Any) -> None:
        b = self.behaviour
        accepted = await self._accepted(scope, raw, send)
        if accepted is None:
            return
        body, record = accepted
        stream = bool(body.get("stream"))
        thinking = b.thinking_for(body)
        if b.flavour == "dashscope" and thinking and not stream:
            await self._error(
                send, 400, "parameter.enable_thinking must be set to false for non-streaming calls",
                code="invalid_parameter_error",
            )
            return
        if stream:
            await self._stream(body, thinking, receive, send, record)
        else:
            await self._complete(body, thinking, send, record)

    async def _text_completion(self, scope: Scope, raw: bytes, receive: Any, send: Any) -> None:
        """vLLM's legacy /v1/completions: the same words as chat, as `text`, streamed or not."""
        b = self.behaviour
        accepted = await self._accepted(scope, raw, send, {"path": "/v1/completions"})
        if accepted is None:
            return
        body, record = accepted
        words, finish = wire.answer_tokens(body, b)
        choices = wire.choices_asked(body)
        usage = wire.usage(wire.count_text_tokens(body.get("prompt")), len(words) * choices, 0)
        writer = wire.ChunkWriter(body["model"], b.flavour, kind="text_completion")
        engine = self.engine
        if not body.get("stream"):
            if not engine.enter(b, body["model"]):
                await engine.wait(b, body["model"])
            try:
                if b.ttft_s > 0 or b.tokens_per_s > 0 or b.total_tokens_per_s > 0:
                    await self._pace(_Clock(), len(words))
            finally:
                engine.finish(b, body["model"])
            self.stats["completed"] += 1
            record["outcome"] = "completed"
            await _raw(send, 200, orjson.dumps(writer.text_completion("".join(words), finish, choices, usage)),
                       b"application/json")
            return
        disconnected = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, disconnected))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        running = False
        try:
            if not engine.enter(b, body["model"]):
                await engine.wait(b, body["model"], disconnected)
            running = True
            clock = _Clock()
            for sent, word in enumerate(words, 1):
                if b.ttft_s > 0 or b.tokens_per_s > 0 or b.total_tokens_per_s > 0:  # zero delay: no call per token
                    await self._pace(clock, sent, disconnected)
                for index in range(choices):
                    await self._send_chunk(send, writer.text_chunk(word, None, index), disconnected)
            for index in range(choices):
                await self._send_chunk(send, writer.text_chunk("", finish, index), disconnected)
            if (body.get("stream_options") or {}).get("include_usage"):
                await self._send_chunk(send, writer.usage_chunk(usage), disconnected)
            self.stats["completed"] += 1
            record["outcome"] = "completed"
            await send({"type": "http.response.body", "body": wire.DONE, "more_body": False})
        except _Disconnected:
            self.stats["disconnects"] += 1
            record["outcome"] = "disconnected"
        finally:
            watcher.cancel()
            if running:
                engine.finish(b, body["model"])

    async def _error(self, send: Any, status: int, message: str, code: str | None = None,
                     param: str | None = None, retry_after: float | None = None) -> None:
        payload = wire.error_body(self.behaviour.flavour, status, message, code=code, param=param)
        extra = [(b"retry-after", str(max(1, round(retry_after))).encode())] if retry_after else []
        await _raw(send, status, payload, b"application/json", extra)

    async def _pace(self, clock: _Clock, tokens_sent: int, disconnected: asyncio.Event | None = None) -> None:
        """Sleep until the token `tokens_sent` is due: ttft, then one token every 1/rate s. A stream
        stops waiting when its client leaves, as vLLM aborts a request whose client is gone."""
        b = self.behaviour
        if b.total_tokens_per_s > 0:
            await self._pace_shared(clock, tokens_sent, disconnected)
            return
        if b.ttft_s <= 0 and b.tokens_per_s <= 0:
            return
        due = clock.started + b.ttft_s + (tokens_sent / b.tokens_per_s if b.tokens_per_s > 0 else 0.0)
        await _sleep_until(due, disconnected)

    async def _pace_shared(self, clock: _Clock, tokens_sent: int, disconnected: asyncio.Event | None) -> None:
        """Decode throughput shared by the running requests: each step of tokens at the rate of the moment
        it starts (one token at a time for a stream; steps of about 20 ms for a whole answer)."""
        b = self.behaviour
        if clock.due < 0:
            clock.due = clock.started + max(b.ttft_s, 0.0)
        await _sleep_until(clock.due, disconnected)
        while clock.done < tokens_sent:
            rate = self.engine.rate(b)
            step = min(tokens_sent - clock.done, max(1, int(rate * 0.02)))
            clock.due += step / rate
            clock.done += step
            await _sleep_until(clock.due, disconnected)

    async def _complete(self, body: dict[str, Any], thinking: bool, send: Any, record: dict[str, Any]) -> None:
        b = self.behaviour
        words, finish = wire.answer_tokens(body, b)
        thoughts = wire.reasoning_tokens(b) if thinking else []
        call = wire.tool_call_for(body)
        n_out = len(words) + len(thoughts) + (8 if call else 0)
        engine = self.engine
        if not engine.enter(b, body["model"]):
            await engine.wait(b, body["model"])
        try:
            if b.ttft_s > 0 or b.tokens_per_s > 0 or b.total_tokens_per_s > 0:
                await self._pace(_Clock(), n_out)
            if b.hang_after_tokens >= 0:
                await asyncio.sleep(3600)
        finally:
            engine.finish(b, body["model"])
        choices = wire.choices_asked(body)
        result = wire.completion(
            body["model"],
            None if call else "".join(words),
            "".join(thoughts) if thinking else None,
            b.reasoning_field,
            call,
            "tool_calls" if call else finish,
            wire.usage(wire.count_prompt_tokens(body), n_out * choices, len(thoughts) * choices),
            choices,
        )
        # Counted before the last byte leaves: a client that has its answer must see the count.
        self.stats["completed"] += 1
        record["outcome"] = "completed"
        await _raw(send, 200, orjson.dumps(result), b"application/json")

    async def _stream(self, body: dict[str, Any], thinking: bool, receive: Any, send: Any,
                      record: dict[str, Any]) -> None:
        """Stream the answer; record how it ended: completed, disconnected or cut."""
        b = self.behaviour
        writer = wire.ChunkWriter(body["model"], b.flavour)
        disconnected = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, disconnected))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        sent = 0
        engine = self.engine
        running = False
        try:
            if not engine.enter(b, body["model"]):  # in line while max_running run
                await engine.wait(b, body["model"], disconnected)
            running = True
            clock = _Clock()
            first: dict[str, Any] = {"role": "assistant", "content": ""}
            if b.flavour == "vllm":
                first["reasoning"] = None
            await self._pace(clock, 0, disconnected)
            if b.hang_after_tokens == 0:  # stall before anything (vLLM sends the role with token 1)
                await disconnected.wait()
                raise _Disconnected
            choices = wire.choices_asked(body)
            for index in range(choices):
                await self._send_chunk(send, writer.chunk(first, index=index), disconnected)
            thoughts = wire.reasoning_tokens(b) if thinking else []
            words, finish = wire.answer_tokens(body, b)
            call = wire.tool_call_for(body)
            deltas: list[dict[str, Any]] = [{b.reasoning_field: t} for t in thoughts]
            if call:
                args = call["arguments"]
                pieces = [args[i:i + 8] for i in range(0, len(args), 8)]
                deltas.append({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                               "function": {"name": call["name"], "arguments": ""}}]})
                deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces]
                finish = "tool_calls"
            else:
                deltas += [{"content": w} for w in words]
            for delta in deltas:
                if sent == b.cut_after_tokens:
                    self.stats["cuts"] += 1
                    record["outcome"] = "cut"
                    raise ConnectionAbortedError("simulated mid-stream cut")
                if sent == b.hang_after_tokens:
                    await disconnected.wait()
                    raise _Disconnected
                sent += 1
                if b.ttft_s > 0 or b.tokens_per_s > 0 or b.total_tokens_per_s > 0:  # zero delay: no call per token
                    await self._pace(clock, sent, disconnected)
                for index in range(choices):  # interleaved, as vLLM streams n > 1
                    await self._send_chunk(send, writer.chunk(delta, index=index), disconnected)
            for index in range(choices):
                await self._send_chunk(send, writer.chunk({}, finish, index=index), disconnected)
            if (body.get("stream_options") or {}).get("include_usage"):
                usage_body = wire.usage(wire.count_prompt_tokens(body), sent * choices, len(thoughts) * choices)
                await self._send_chunk(send, writer.usage_chunk(usage_body), disconnected)
            self.stats["completed"] += 1
            record["outcome"] = "completed"
            await send({"type": "http.response.body", "body": wire.DONE, "more_body": False})
        except _Disconnected:
            self.stats["disconnects"] += 1
            record["outcome"] = "disconnected"
        finally:
            watcher.cancel()
            if running:
                engine.finish(b, body["model"])

    @staticmethod
    async def _send_chunk(send: Any, frame: bytes, disconnected: asyncio.Event) -> None:
        if disconnected.is_set():
            raise _Disconnected
        await send({"type": "http.response.body", "body": frame, "more_body": True})


async def _sleep_until(due: float, disconnected: asyncio.Event | None) -> None:
    delay = due - time.perf_counter()
    if delay <= 0:
        return
    if disconnected is None:
        await asyncio.sleep(delay)
        return
    try:
        await asyncio.wait_for(disconnected.wait(), delay)
    except TimeoutError:
        return
    raise _Disconnected


async def _watch_disconnect(receive: Any, flag: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            flag.set()
            return


async def _raw(send: Any, status: int, payload: bytes, content_type: bytes,
               extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(payload)).encode()),
               *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _json(send: Any, status: int, obj: Any) -> None:
    await _raw(send, status, orjson.dumps(obj), b"application/json")
