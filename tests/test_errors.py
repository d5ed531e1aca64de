"""Bad input gets OpenAI's error shape with the right status, never a 500 or a stack trace."""

from __future__ import annotations

import logging

import httpx
import openai
import pytest

from tests.conftest import user


def _assert_shape(r: httpx.Response, status: int, code: str, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code and err["param"] == param
    assert "Traceback" not in r.text
    assert r.headers["x-request-id"]
    return err


def test_invalid_json_is_400(gateway):
    r = gateway.http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    _assert_shape(r, 400, "invalid_json")


def test_non_object_body_is_400(gateway):
    _assert_shape(gateway.http.post("/v1/chat/completions", json=[1, 2]), 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "auto"}, "messages"),
        ({"model": "auto", "messages": []}, "messages"),
        ({"messages": user()}, "model"),
        ({"model": "auto", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "auto", "messages": user(), "temperature": 5}, "temperature"),
        ({"model": "auto", "messages": user(), "max_tokens": 0}, "max_tokens"),
        ({"model": "auto", "messages": user(), "stream": "yes please"}, "stream"),
        ({"model": "auto", "messages": user(), "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "auto", "messages": user(), "response_format": {"type": "xml"}}, "response_format.type"),
        ({"model": "auto", "messages": user(), "reasoning_effort": "extreme"}, "reasoning_effort"),
    ],
)
def test_schema_errors_name_the_param(gateway, body, param):
    err = _assert_shape(gateway.http.post("/v1/chat/completions", json=body), 400, "invalid_value", param)
    assert param in err["message"]


def test_schema_error_through_the_sdk(gateway):
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client.chat.completions.create(model="auto", messages=user(), temperature=3)
    assert info.value.body["param"] == "temperature"


def test_missing_key_is_401(gateway):
    r = httpx.post(f"{gateway.base}/v1/chat/completions", json={"model": "auto", "messages": user()})
    _assert_shape(r, 401, "invalid_api_key")


def test_wrong_key_is_401_through_the_sdk(gateway):
    client = openai.OpenAI(base_url=f"{gateway.base}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="auto", messages=user())
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_body_over_limit_is_413(gateway):
    huge = {"model": "auto", "messages": user("x" * (70 * 1024))}  # test limit is 64 KiB
    _assert_shape(gateway.http.post("/v1/chat/completions", json=huge), 413, "request_too_large")


def test_body_over_limit_without_content_length_is_413(gateway):
    def chunks():
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(80):
            yield b"y" * 1024
        yield b'"}]}'

    r = gateway.http.post("/v1/chat/completions", content=chunks())
    _assert_shape(r, 413, "request_too_large")


def test_unknown_model_is_404_model_not_found(gateway):
    with pytest.raises(openai.NotFoundError) as info:
        gateway.client.chat.completions.create(model="gpt-9", messages=user())
    assert info.value.body["code"] == "model_not_found" and info.value.body["param"] == "model"


def test_unknown_path_is_404_in_openai_shape(gateway):
    _assert_shape(gateway.http.get("/v1/nothing-here"), 404, "not_found")


def test_wrong_method_is_405_in_openai_shape(gateway):
    _assert_shape(gateway.http.get("/v1/chat/completions"), 405, "http_error")


def test_upstream_key_never_logged(gateway, cloud_sim, caplog):
    caplog.set_level(logging.DEBUG)
    cloud_sim[0].behaviour.update({"fail_next": 2})
    gateway.http.post("/v1/chat/completions", json={"model": "cloud", "messages": user()})
    assert caplog.records, "the fallback should have been logged"
    assert "sk-upstream-secret-123" not in caplog.text
