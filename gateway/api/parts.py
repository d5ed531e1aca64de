"""Content parts of chat messages, checked one by one so a bad part is a 400 naming it
(`messages[0].content[1].text`) rather than an upstream 5xx: a text part without a string text
used to reach vLLM as `null`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import InvalidRequest


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _URL(_Part):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class _Audio(_Part):
    data: str
    format: str


class TextPart(_Part):
    type: Literal["text"]
    text: str


class ImagePart(_Part):
    type: Literal["image_url"]
    image_url: _URL


class AudioPart(_Part):
    type: Literal["input_audio"]
    input_audio: _Audio


class FilePart(_Part):
    type: Literal["file"]
    file: dict[str, Any]


class RefusalPart(_Part):
    type: Literal["refusal"]
    refusal: str


PART_TYPES: dict[str, type[_Part]] = {
    "text": TextPart, "image_url": ImagePart, "input_audio": AudioPart, "file": FilePart, "refusal": RefusalPart,
}


def _path(loc: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def check_part(part: Any, where: str) -> None:
    """Raise InvalidRequest naming the bad field of one part; `where` is its own param path."""
    if not isinstance(part, dict):
        raise InvalidRequest(f"Invalid value for '{where}': a content part must be an object.", param=where)
    kind = part.get("type")
    model = PART_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        supported = ", ".join(f"'{k}'" for k in PART_TYPES)
        raise InvalidRequest(f"Invalid value for '{where}.type': {kind!r} is not a content part type; "
                             f"supported: {supported}.", param=f"{where}.type")
    try:
        model.model_validate(part)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = where + _path(first["loc"])
        raise InvalidRequest(f"Invalid value for '{param}': {first['msg']}", param=param) from None


def check_message_parts(messages: list[Any]) -> None:
    """Every list-valued `content` of the (already schema-validated) messages."""
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for j, part in enumerate(content):
                check_part(part, f"messages[{i}].content[{j}]")
