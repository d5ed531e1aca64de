"""Chat SSE frames -> Responses API stream events.

The chat pipeline's frames (`data: {chunk}`, ending with `data: [DONE]` or an error event) become
`event: <type>` / `data: {...}` pairs with an increasing `sequence_number`: response.created and
.in_progress, then per output item its added/delta/done events (reasoning summary, output text,
function call arguments), then response.completed (or .incomplete when the answer hit
max_output_tokens) with the whole response, usage included. A broken upstream ends the stream with
response.failed, never a hang. Closing this generator closes the chat frames, which cancels the
upstream request and settles its accounting.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.context import RequestState
from gateway.responses.translate import (
    ResponseDraft,
    function_call_item,
    message_item,
    new_id,
    reasoning_item,
    response_usage,
    status_of,
    usage_of,
)

log = logging.getLogger("qroute.responses")
Keep = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class _Item:
    """The output item being streamed: what it is, where, and its text (or arguments) so far."""

    kind: str  # "reasoning", "message" or "function_call"
    index: int
    id: str
    parts: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    chat_index: int = 0  # the chat tool call's index, for function calls

    def text(self) -> str:
        return "".join(self.parts)

    def item(self, status: str) -> dict[str, Any]:
        if self.kind == "reasoning":
            return reasoning_item(self.id, self.text())
        if self.kind == "message":
            return message_item(self.id, self.text(), status)
        return function_call_item(self.id, self.call_id, self.name, self.text(), status)


class ResponseEvents:
    """Builds the event frames; keeps the finished output items in order."""

    def __init__(self, draft: ResponseDraft) -> None:
        self.draft = draft
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.open: _Item | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def start(self) -> list[bytes]:
        snapshot = self.draft.build("in_progress", [])
        return [self.event("response.created", response=snapshot),
                self.event("response.in_progress", response=snapshot)]

    # --- one chat chunk -----------------------------------------------------------------------
    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        frames: list[bytes] = []
        if isinstance(chunk.get("usage"), dict):
            self.usage = response_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                frames += self._reasoning(reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                frames += self._text(content)
            for call in delta.get("tool_calls") or []:
                frames += self._call(call)
        return frames

    def _reasoning(self, delta: str) -> list[bytes]:
        frames: list[bytes] = []
        item = self.open
        if item is None or item.kind != "reasoning":
            frames += self.close()
            item = self._open("reasoning", new_id("rs"))
            frames.append(self.event("response.output_item.added", output_index=item.index,
                                     item={"id": item.id, "type": "reasoning", "summary": []}))
            frames.append(self.event("response.reasoning_summary_part.added", item_id=item.id,
                                     output_index=item.index, summary_index=0,
                                     part={"type": "summary_text", "text": ""}))
        item.parts.append(delta)
        frames.append(self.event("response.reasoning_summary_text.delta", item_id=item.id,
                                 output_index=item.index, summary_index=0, delta=delta))
        return frames

    def _text(self, delta: str) -> list[bytes]:
        frames: list[bytes] = []
        item = self.open
        if item is None or item.kind != "message":
            frames += self.close()
            item = self._open("message", new_id("msg"))
            frames += self._message_opened(item)
        item.parts.append(delta)
        frames.append(self.event("response.output_text.delta", item_id=item.id, output_index=item.index,
                                 content_index=0, delta=delta, logprobs=[]))
        return frames

    def _message_opened(self, item: _Item) -> list[bytes]:
        added = {"id": item.id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        return [self.event("response.output_item.added", output_index=item.index, item=added),
                self.event("response.content_part.added", item_id=item.id, output_index=item.index,
                           content_index=0, part={"type": "output_text", "text": "", "annotations": []})]

    def _call(self, call: dict[str, Any]) -> list[bytes]:
        frames: list[bytes] = []
        function = call.get("function") or {}
        chat_index = call.get("index", 0)
        item = self.open
        if item is None or item.kind != "function_call" or item.chat_index != chat_index:
            frames += self.close()
            item = self._open("function_call", new_id("fc"))
            item.chat_index = chat_index
            item.call_id = call.get("id") or new_id("call")
            item.name = function.get("name") or ""
            frames.append(self.event("response.output_item.added", output_index=item.index,
                                     item=function_call_item(item.id, item.call_id, item.name, "", "in_progress")))
        elif function.get("name") and not item.name:
            item.name = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.parts.append(arguments)
            frames.append(self.event("response.function_call_arguments.delta", item_id=item.id,
                                     output_index=item.index, delta=arguments))
        return frames

    def _open(self, kind: str, item_id: str) -> _Item:
        self.open = _Item(kind, len(self.output), item_id)
        return self.open

    # --- endings --------------------------------------------------------------------------------
    def close(self) -> list[bytes]:
        """The done events of the open item, which joins the output."""
        item = self.open
        if item is None:
            return []
        self.open = None
        status = "incomplete" if item.kind == "message" and status_of(self.finish_reason)[1] else "completed"
        done = item.item(status)
        self.output.append(done)
        where = {"item_id": item.id, "output_index": item.index}
        frames: list[bytes] = []
        if item.kind == "reasoning":
            part = {"type": "summary_text", "text": item.text()}
            frames.append(self.event("response.reasoning_summary_text.done", **where, summary_index=0,
                                     text=item.text()))
            frames.append(self.event("response.reasoning_summary_part.done", **where, summary_index=0, part=part))
        elif item.kind == "message":
            frames.append(self.event("response.output_text.done", **where, content_index=0, text=item.text(),
                                     logprobs=[]))
            frames.append(self.event("response.content_part.done", **where, content_index=0,
                                     part=done["content"][0]))
        else:
            frames.append(self.event("response.function_call_arguments.done", **where, name=item.name,
                                     arguments=item.text()))
        frames.append(self.event("response.output_item.done", output_index=item.index, item=done))
        return frames

    def finish(self, fallback_usage: dict[str, Any] | None) -> tuple[list[bytes], dict[str, Any]]:
        """Close what is open (an answer with no text and no call still gets an empty message),
        then the final event with the whole response."""
        frames = self.close()
        if not any(item["type"] in ("message", "function_call") for item in self.output):
            item = self._open("message", new_id("msg"))
            frames += self._message_opened(item)
            frames += self.close()
        status, incomplete = status_of(self.finish_reason)
        response = self.draft.build(status, self.output, self.usage or fallback_usage, incomplete=incomplete)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        frames.append(self.event(kind, response=response))
        return frames, response

    def failed(self, error: dict[str, Any]) -> bytes:
        """response.failed with what was produced so far; the open item is left incomplete."""
        output = [*self.output]
        if self.open is not None:
            output.append(self.open.item("incomplete"))
            self.open = None
        kind = error.get("type")
        code = "rate_limit_exceeded" if kind == "rate_limit_error" else "server_error"
        message = error.get("message") if isinstance(error.get("message"), str) else "The upstream stream broke."
        response = self.draft.build("failed", output, self.usage, error={"code": code, "message": message})
        return self.event("response.failed", response=response)


def _payloads(frame: bytes) -> list[bytes]:
    """The `data:` payloads in one chat frame (an error frame carries its [DONE] with it)."""
    return [line[6:] for line in frame.split(b"\n") if line.startswith(b"data: ")]


async def response_events(frames: AsyncIterator[bytes], draft: ResponseDraft, state: RequestState,
                          keep: Keep | None) -> AsyncIterator[bytes]:
    """The Responses stream for one chat stream; `keep` stores the finished response."""
    events = ResponseEvents(draft)
    error: dict[str, Any] | None = None
    ended = False
    try:
        for frame in events.start():
            yield frame
        try:
            async for frame in frames:
                for payload in _payloads(frame):
                    if payload == b"[DONE]":
                        ended = True
                        continue
                    chunk = orjson.loads(payload)
                    if isinstance(chunk.get("error"), dict):
                        error = chunk["error"]
                        continue
                    for out in events.chunk(chunk):
                        yield out
        except Exception:  # an unreadable chunk: the client is told, never left with a cut stream
            log.exception("translating the chat stream of %s failed", draft.id)
            error = {"message": "The gateway could not read the upstream's stream."}
        # The chat stream has ended and settled (priced): its usage is known even if none was sent.
        if error is not None or not ended:
            yield events.failed(error or {"message": "The upstream stream ended early."})
            return
        fallback = usage_of(state.usage) if state.usage is not None else None
        finals, response = events.finish(fallback)
        if keep is not None:
            try:
                await keep(response)
            except Exception:  # an answer the client has is not failed for want of storage
                log.exception("storing response %s failed", response["id"])
        for out in finals:
            yield out
    finally:
        closer = getattr(frames, "aclose", None)
        if closer is not None:
            await closer()
