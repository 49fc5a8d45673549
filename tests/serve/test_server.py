"""`latentrl serve` driven through the official openai client and raw HTTP.

One server subprocess for the module (tests/serve/conftest.py): the tiny main model as
``main`` and a one-step DLR plugin as ``tiny``, on the hf backend.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import time

import openai
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.serve.conftest import (
    API_KEY,
    MAX_BODY_BYTES,
    MAX_TOKENS_LIMIT,
    assert_answers_equal,
    eval_samples,
)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)


def test_models_are_listed(client):
    models = {model.id: model for model in client.models.list()}
    assert list(models) == ["main", "tiny"]
    assert models["tiny"].model_extra["parent"] == "main"
    assert models["main"].model_extra["parent"] is None


@pytest.mark.parametrize("plugin", [True, False], ids=["plugin", "main"])
def test_greedy_answers_equal_latentrl_eval(
    client, tiny_model_dir, tiny_plugin_dir, tmp_path, plugin
):
    """Completions (one prompt per request, and all in one request) and chat answers equal
    ``latentrl eval``'s on the same problems."""
    samples = eval_samples(tiny_model_dir, tmp_path, tiny_plugin_dir if plugin else None)
    assert_answers_equal(client, "tiny" if plugin else "main", samples)


@pytest.mark.parametrize("model", ["main", "tiny"])
def test_streaming_sends_the_same_text_in_pieces(client, model):
    prompt = "Question: Mia has 12 cards. She gets 5. How many cards does Mia have now?\nAnswer:"
    whole = client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0)
    chunks = list(
        client.completions.create(
            model=model, prompt=prompt, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 3
    assert "".join(pieces) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12 == whole.usage.completion_tokens

    question = "Mia has 12 cards. She gets 5. How many cards does Mia have now?"
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=12,
        temperature=0, stream=True,
    )  # fmt: skip
    deltas = [chunk.choices[0].delta for chunk in stream]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas) == whole.choices[0].text


def test_sampling_several_choices_is_seeded(client):
    def ask(seed):
        return client.completions.create(
            model="tiny", prompt="Question: Tom has 3 hats. He buys 4. How many hats does "
            "Tom have now?\nAnswer:", max_tokens=8, temperature=1.0, n=3, seed=seed,
        )  # fmt: skip

    first, again = ask(7), ask(7)
    assert len(first.choices) == 3
    assert [c.text for c in first.choices] == [c.text for c in again.choices]


BAD_REQUESTS = [
    # (description, path, body or raw bytes, headers, status, message fragment, param)
    ("unknown model", "/v1/completions", {"model": "nope", "prompt": "1"}, None, 404,
     "the model 'nope' does not exist; available: 'main', 'tiny'", "model"),
    ("malformed JSON", "/v1/completions", b'{"model": "main", "prompt": ', None, 400,
     "the request body is not valid JSON", None),
    ("wrong type", "/v1/completions", {"model": "main", "prompt": "1", "max_tokens": "ten"},
     None, 400, "max_tokens: Input should be a valid integer", "max_tokens"),
    ("prompt not text", "/v1/completions", {"model": "main", "prompt": {"a": 1}}, None, 400,
     "prompt", "prompt"),
    ("missing field", "/v1/chat/completions", {"model": "main"}, None, 400,
     "messages: Field required", "messages"),
    ("bad role", "/v1/chat/completions",
     {"model": "main", "messages": [{"role": "robot", "content": "hi"}]}, None, 400,
     "messages.0.role: Input should be 'system', 'user' or 'assistant'", "messages.0.role"),
    ("last turn not the user's", "/v1/chat/completions",
     {"model": "main", "messages": [{"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": "yo"}]},
     None, 400, "messages: the last message must be the user's", "messages"),
    ("unsupported field", "/v1/completions", {"model": "main", "prompt": "1", "logit_bias": {}},
     None, 400, "logit_bias: Extra inputs are not permitted", "logit_bias"),
    ("max_tokens too large", "/v1/completions",
     {"model": "main", "prompt": "1", "max_tokens": MAX_TOKENS_LIMIT + 1}, None, 400,
     f"max_tokens {MAX_TOKENS_LIMIT + 1} is larger than this server's limit of "
     f"{MAX_TOKENS_LIMIT}", "max_tokens"),
    ("negative temperature", "/v1/completions",
     {"model": "main", "prompt": "1", "temperature": -1}, None, 400,
     "temperature: Input should be greater than or equal to 0", "temperature"),
    ("empty stop string", "/v1/completions", {"model": "main", "prompt": "1", "stop": [""]},
     None, 400, "stop strings must be non-empty", None),
    ("prompt longer than the context", "/v1/completions",
     {"model": "main", "prompt": " 1" * 300}, None, 400,
     "tokens, more than this server's limit of 511", "prompt"),
    ("prompt plus max_tokens over the context", "/v1/completions",
     {"model": "tiny", "prompt": " 1" * 240, "max_tokens": 64}, None, 400,
     "exceeds the model's context of 512 tokens", None),
    ("body too large", "/v1/completions",
     {"model": "main", "prompt": "x" * MAX_BODY_BYTES}, None, 413,
     f"the request body is larger than this server's limit of {MAX_BODY_BYTES} bytes", None),
    ("missing API key", "/v1/models", None, {"Authorization": ""}, 401,
     "missing or wrong API key", None),
    ("wrong API key", "/v1/completions", {"model": "main", "prompt": "1"},
     {"Authorization": "Bearer wrong"}, 401, "missing or wrong API key", None),
    ("unknown plugin to unload", "/v1/plugins/nope", "DELETE", None, 404,
     "no plugin named 'nope' is loaded", None),
    ("unknown route", "/v1/embeddings", {"model": "main", "input": "1"}, None, 404,
     "Not Found", None),
]  # fmt: skip


@pytest.mark.parametrize(
    "path, body, headers, status, message, param",
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_requests_get_openai_errors_and_the_server_stays_up(
    server, path, body, headers, status, message, param
):
    headers = {"Authorization": f"Bearer {API_KEY}", **(headers or {})}
    url = server.url + path
    if body == "DELETE":
        response = requests.delete(url, headers=headers, timeout=30)
    elif body is None:
        response = requests.get(url, headers=headers, timeout=30)
    elif isinstance(body, bytes):
        headers["Content-Type"] = "application/json"
        response = requests.post(url, data=body, headers=headers, timeout=30)
    else:
        response = requests.post(url, json=body, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert message in error["message"]
    assert error["param"] == param
    assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
    assert server.process.poll() is None


def test_openai_client_raises_its_own_errors(server):
    no_key = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        no_key.models.list()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-4", prompt="1")
    with pytest.raises(openai.BadRequestError, match="larger than this server's limit"):
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "1"}], max_tokens=10_000
        )


def test_plugins_load_and_unload_at_runtime(server, client, tiny_plugin_dir, tmp_path):
    auth = {"Authorization": f"Bearer {API_KEY}"}
    prompt = "Question: Sam has 9 coins. He finds 6. How many coins does Sam have now?\nAnswer:"

    def answer(model):
        return client.completions.create(
            model=model, prompt=prompt, max_tokens=10, temperature=0
        ).choices[0].text  # fmt: skip

    loaded = requests.post(
        f"{server.url}/v1/plugins", json={"name": "copy", "path": str(tiny_plugin_dir)},
        headers=auth, timeout=60,
    )  # fmt: skip
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["parent"] == "main"
    assert [m.id for m in client.models.list()] == ["main", "tiny", "copy"]
    assert answer("copy") == answer("tiny")

    taken = requests.post(
        f"{server.url}/v1/plugins", json={"name": "tiny", "path": str(tiny_plugin_dir)},
        headers=auth, timeout=60,
    )  # fmt: skip
    assert taken.status_code == 409
    assert taken.json()["error"]["message"] == "model name 'tiny' is already in use"

    # The same plugin, recorded as trained for another main model.
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_plugin_dir, foreign)
    config = json.loads((foreign / "latent_plugin.json").read_text())
    config["main_model"] = str(tmp_path)
    (foreign / "latent_plugin.json").write_text(json.dumps(config))
    refused = requests.post(
        f"{server.url}/v1/plugins", json={"name": "foreign", "path": str(foreign)},
        headers=auth, timeout=60,
    )  # fmt: skip
    assert refused.status_code == 400
    message = refused.json()["error"]["message"]
    assert message.startswith("cannot load plugin 'foreign': plugin")
    assert f"was trained for main model {str(tmp_path)!r}, not " in message

    missing = requests.post(
        f"{server.url}/v1/plugins", json={"name": "gone", "path": str(tmp_path / "nothing")},
        headers=auth, timeout=60,
    )  # fmt: skip
    assert missing.status_code == 400
    assert "is not a latent plugin: latent_plugin.json is missing" in missing.text

    removed = requests.delete(f"{server.url}/v1/plugins/copy", headers=auth, timeout=30)
    assert removed.json() == {"id": "copy", "object": "model", "deleted": True}
    assert [m.id for m in client.models.list()] == ["main", "tiny"]
    with pytest.raises(openai.NotFoundError):
        answer("copy")


def metric_values(url: str) -> dict[tuple[str, tuple], float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_200_concurrent_requests_are_batched_without_errors(server):
    """A loopback load test: 200 requests at once, half of them through the plugin."""
    before = metric_values(server.url)
    client = openai.AsyncOpenAI(
        base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=300
    )

    async def one(i: int):
        started = time.perf_counter()
        response = await client.completions.create(
            model="tiny" if i % 2 else "main", max_tokens=4, temperature=0,
            prompt=f"Question: Ann has {i % 20} pens. She buys 3. How many pens does Ann have now?\nAnswer:",
        )  # fmt: skip
        return time.perf_counter() - started, response

    async def load():
        started = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(200)))
        await client.close()
        return time.perf_counter() - started, results

    seconds, results = asyncio.run(load())
    latencies = sorted(latency for latency, _ in results)
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * len(latencies)) - 1]
    assert all(r.choices[0].finish_reason in ("stop", "length") for _, r in results)

    after = metric_values(server.url)

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("latentrl_requests_total", endpoint="/v1/completions", status="200") == 200
    generated = sum(r.usage.completion_tokens for _, r in results)
    plugin_tokens = sum(r.usage.completion_tokens for _, r in results if r.model == "tiny")
    assert grew("latentrl_completion_tokens_total", model="tiny") == plugin_tokens
    assert grew("latentrl_completion_tokens_total", model="main") == generated - plugin_tokens
    engine_calls = grew("latentrl_batch_prompts_count")
    print(
        f"\n200 concurrent requests in {seconds:.2f} s: p50 {p50:.3f} s, p99 {p99:.3f} s, "
        f"{engine_calls:.0f} engine calls"
    )
    assert grew("latentrl_batch_prompts_sum") == 200
    assert engine_calls <= 50, f"{engine_calls} engine calls for 200 requests: not batched"
    assert grew("latentrl_request_latency_seconds_count", endpoint="/v1/completions") == 200
    assert server.process.poll() is None
