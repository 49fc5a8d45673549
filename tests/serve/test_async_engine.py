"""`latentrl serve` on vLLM's async engine: tokens stream as they are generated, requests
are batched continuously, a client that leaves aborts its request, and plugins load and
unload under load. One server subprocess for the session (tests/serve/conftest.py)."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest
import requests

from tests.serve.conftest import assert_answers_equal, eval_samples
from tests.serve.test_server import metric_values

PROMPT = "Question: Mia has 12 cards. She gets 5. How many cards does Mia have now?\nAnswer:"


@pytest.fixture(scope="module")
def client(async_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{async_server.url}/v1", api_key="none", max_retries=0)


def async_client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=300
    )


@pytest.mark.parametrize("plugin", [True, False], ids=["plugin", "main"])
def test_greedy_answers_equal_latentrl_eval(
    client, tiny_model_dir, tiny_plugin_dir, tmp_path, plugin
):
    """One prompt per request, all prompts in one request (several engine requests merged
    in order), and chat: the text ``latentrl eval`` decodes on the same problems."""
    samples = eval_samples(tiny_model_dir, tmp_path, tiny_plugin_dir if plugin else None)
    assert_answers_equal(client, "tiny" if plugin else "main", samples)


@pytest.mark.parametrize("model", ["main", "tiny"])
def test_tokens_arrive_while_the_engine_generates(client, model):
    """The first chunk of a 64-token answer arrives long before the last one, the chunks
    arrive spread over the generation, and they join to the non-streamed answer."""
    whole = client.completions.create(
        model=model, prompt=PROMPT, max_tokens=64, temperature=0, extra_body={"ignore_eos": True}
    )
    started = time.perf_counter()
    arrivals, pieces, chunks = [], [], []
    for chunk in client.completions.create(
        model=model, prompt=PROMPT, max_tokens=64, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    ):  # fmt: skip
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].text:
            arrivals.append(time.perf_counter() - started)
            pieces.append(chunk.choices[0].text)
    total = time.perf_counter() - started
    print(f"\n{model}: first chunk {1000 * arrivals[0]:.0f} ms of {1000 * total:.0f} ms")
    assert "".join(pieces) == whole.choices[0].text
    # vLLM merges the deltas a reader has not taken yet, so how many chunks carry the 64
    # tokens depends on timing (27-64 seen here); the spread in time is what shows streaming.
    assert len(pieces) >= 16
    assert arrivals[0] < 0.5 * total
    assert arrivals[-1] - arrivals[0] > 0.4 * total
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 64

    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=8,
        temperature=0, stream=True,
    )  # fmt: skip
    deltas = [chunk.choices[0].delta for chunk in stream]
    assert deltas[0].role == "assistant"
    assert len([d for d in deltas if d.content]) > 1


def test_a_short_request_finishes_while_a_long_one_generates(async_server):
    """Continuous batching: a 4-token request sent once a 450-token one is generating
    finishes first (the micro-batcher would hold it until the long batch ends)."""
    finished: dict[str, float] = {}

    async def run():
        client = async_client(async_server)

        async def long():
            stream = await client.completions.create(
                model="main", prompt=PROMPT, max_tokens=450, temperature=0, stream=True,
                extra_body={"ignore_eos": True},
            )  # fmt: skip
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].text and "long_started" not in finished:
                    finished["long_started"] = time.perf_counter()
                    short_task.set_result(None)
            finished["long"] = time.perf_counter()

        async def short():
            await short_task
            await client.completions.create(model="tiny", prompt=PROMPT, max_tokens=4)
            finished["short"] = time.perf_counter()

        short_task = asyncio.get_running_loop().create_future()
        await asyncio.gather(long(), short())
        await client.close()

    asyncio.run(run())
    assert finished["long_started"] < finished["short"] < finished["long"]


def test_a_client_that_leaves_aborts_its_request(async_server):
    """A request whose client times out leaves the server and the engine at once, not when
    it would have finished (``latentrl_requests_decoding`` and ``latentrl_engine_requests``
    fall back to 0; the micro-batcher's engine would hold it to the end of its batch)."""
    body = {"model": "main", "prompt": PROMPT, "max_tokens": 450, "n": 4, "temperature": 1.0,
            "seed": 0, "ignore_eos": True}  # fmt: skip
    started = time.perf_counter()
    requests.post(f"{async_server.url}/v1/completions", json=body, timeout=300).raise_for_status()
    full = time.perf_counter() - started

    def decoding() -> float:
        values = metric_values(async_server.url)
        return values[("latentrl_requests_decoding", ())] + values[("latentrl_engine_requests", ())]

    assert decoding() == 0
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{async_server.url}/v1/completions", json=body, timeout=full / 5)
    left = time.perf_counter()
    while decoding() > 0:
        assert time.perf_counter() - left < full / 2, "the request went on decoding"
        time.sleep(0.01)
    print(f"\naborted {1000 * (time.perf_counter() - left):.0f} ms after the client left; "
          f"the whole request takes {1000 * full:.0f} ms")  # fmt: skip


def test_a_request_over_the_context_is_refused_before_streaming(client):
    with pytest.raises(openai.BadRequestError, match="exceeds the model's context of 512"):
        client.completions.create(
            model="tiny", prompt=" 1" * 240, max_tokens=64, stream=True
        )  # fmt: skip


def test_300_concurrent_requests_while_a_plugin_is_loaded_and_unloaded(
    async_server, tiny_plugin_dir
):
    """No error and no lost request; /health and /metrics answer all along."""
    url = async_server.url
    polls: list[int] = []

    async def run():
        client = async_client(async_server)
        http = httpx.AsyncClient(base_url=url, timeout=300)
        done = asyncio.Event()

        async def one(i: int):
            model = ("main", "tiny")[i % 2]
            response = await client.completions.create(
                model=model, max_tokens=8, temperature=0,
                prompt=f"Question: Ann has {i % 20} pens. She buys 3. How many pens does Ann have now?\nAnswer:",
            )  # fmt: skip
            return response

        async def poll():
            while not done.is_set():
                for path in ("/health", "/metrics"):
                    polls.append((await http.get(path)).status_code)
                await asyncio.sleep(0.02)

        async def swap_plugin():
            await asyncio.sleep(0.2)
            loaded = await http.post(
                "/v1/plugins", json={"name": "extra", "path": str(tiny_plugin_dir)}
            )
            assert loaded.status_code == 200, loaded.text
            answers = await asyncio.gather(*(
                client.completions.create(model="extra", prompt=f"Question: {i} + 2?\nAnswer:", max_tokens=4)
                for i in range(10)
            ))  # fmt: skip
            removed = await http.delete("/v1/plugins/extra")
            assert removed.status_code == 200
            return answers

        poller = asyncio.create_task(poll())
        results = await asyncio.gather(*(one(i) for i in range(300)), swap_plugin())
        done.set()
        await poller
        await client.close()
        await http.aclose()
        return results

    *responses, extra = asyncio.run(run())
    assert len(responses) == 300 and len(extra) == 10
    assert all(r.choices[0].finish_reason in ("stop", "length") for r in responses + extra)
    assert all(r.usage.completion_tokens > 0 for r in responses)
    assert len(polls) > 10 and set(polls) == {200}
    assert async_server.process.poll() is None
