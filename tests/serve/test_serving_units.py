"""Prompt building and stream slicing, without a server."""

from __future__ import annotations

import asyncio
import doctest
import time
from contextlib import aclosing

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from latentrl.cli import main as cli_main
from latentrl.config import ConfigError, ServeConfig, load_config
from latentrl.rollout import Completion
from latentrl.serve import serving
from latentrl.serve.app import create_app
from latentrl.serve.decoding import merged, text_pieces
from latentrl.serve.protocol import ChatMessage, OpenAIError
from latentrl.serve.serving import chat_prompt, question_in

TEMPLATE = "Question: {question}\nAnswer:"


def test_docstring_examples():
    result = doctest.testmod(serving)
    assert result.attempted > 0 and result.failed == 0


@given(st.text())
def test_the_question_of_a_templated_prompt_is_recovered(question):
    assert question_in(TEMPLATE.replace("{question}", question), TEMPLATE) == question


@given(st.text())
def test_a_prompt_without_the_template_shape_is_the_question(prompt):
    if not (prompt.startswith("Question: ") and prompt.endswith("\nAnswer:")):
        assert question_in(prompt, TEMPLATE) == prompt


def test_chat_without_a_template_uses_role_lines_and_the_task_template():
    class NoChatTemplate:
        chat_template = None

    messages = [
        ChatMessage(role="system", content="Answer with a number."),
        ChatMessage(role="user", content="1 + 1?"),
        ChatMessage(role="assistant", content="2"),
        ChatMessage(role="user", content="2 + 2?"),
    ]
    prompt, question = chat_prompt(messages, NoChatTemplate(), TEMPLATE)
    assert prompt == (
        "system: Answer with a number.\nuser: 1 + 1?\nassistant: 2\nQuestion: 2 + 2?\nAnswer:"
    )
    assert question == "2 + 2?"
    with pytest.raises(OpenAIError, match="the last message must be the user's"):
        chat_prompt(messages[:3], NoChatTemplate(), TEMPLATE)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_stream_pieces_join_to_the_completion_text(tokenizer, data):
    """Whatever the tokens (special ones, partial characters) and wherever a stop string
    cut the text, the streamed pieces join to exactly the returned text."""
    ids = data.draw(st.lists(st.integers(0, len(tokenizer) - 1), min_size=1, max_size=24))
    full = tokenizer.decode(ids, skip_special_tokens=True)
    text = full[: data.draw(st.integers(0, len(full)))]
    pieces = text_pieces(tokenizer, Completion(ids, text, "stop"))
    assert "".join(pieces) == text
    assert all(pieces)


def test_serve_config_refuses_bad_plugin_names_and_templates():
    with pytest.raises(ConfigError, match="plugin name 'a.b' must be letters"):
        load_config(ServeConfig, overrides=["model=org/m", "plugins={a.b: /p}"])
    with pytest.raises(ConfigError, match="a plugin can't have the main model's name"):
        load_config(ServeConfig, overrides=["model=org/m", "served_model_name=m", "plugins.m=/p"])
    with pytest.raises(ConfigError, match="prompt_template: must contain"):
        load_config(ServeConfig, overrides=["model=org/m", "prompt_template=Q"])


def test_cli_refuses_a_plugin_flag_without_a_path(capsys):
    assert cli_main(["serve", "--model", "m", "--plugin", "tiny"]) == 2
    assert "--plugin 'tiny': expected NAME=PATH" in capsys.readouterr().err


def test_a_plugin_that_cannot_load_stops_the_server_before_it_listens(
    tiny_model_dir, tmp_path, capsys
):
    argv = ["serve", "--model", str(tiny_model_dir), "--plugin", f"broken={tmp_path}",
            "rollout.backend=hf"]  # fmt: skip
    assert cli_main(argv) == 2
    assert (
        f"plugins.broken: cannot load plugin 'broken': {tmp_path} is not a latent plugin: "
        "latent_plugin.json is missing" in capsys.readouterr().err
    )


def test_merged_streams_interleave_and_leaving_early_cancels_every_stream():
    cancelled: list[int] = []

    async def ticks(index: int, count: int, every_s: float):
        try:
            for i in range(count):
                await asyncio.sleep(every_s)
                yield f"{index}:{i}"
        except asyncio.CancelledError:
            cancelled.append(index)
            raise

    async def run():
        everything = [item async for item in merged([ticks(0, 3, 0.01), ticks(1, 2, 0.015)])]
        async with aclosing(merged([ticks(0, 100, 0.01), ticks(1, 100, 0.01)])) as early:
            first = await anext(early)
        return everything, first

    everything, first = asyncio.run(run())
    assert sorted(everything) == [(0, "0:0"), (0, "0:1"), (0, "0:2"), (1, "1:0"), (1, "1:1")]
    assert [item for index, item in everything if index == 0] == ["0:0", "0:1", "0:2"]
    assert first[1].endswith(":0")
    assert sorted(cancelled) == [0, 1]


def test_an_error_in_one_stream_ends_the_merge_with_it():
    async def fails():
        yield 1
        raise ValueError("engine refused")

    async def slow():
        await asyncio.sleep(10)
        yield 2

    async def run():
        return [item async for item in merged([fails(), slow()])]

    with pytest.raises(ValueError, match="engine refused"):
        asyncio.run(asyncio.wait_for(run(), timeout=5))


def test_a_request_over_the_timeout_gets_504_and_the_server_goes_on(tiny_model_dir):
    cfg = load_config(ServeConfig, overrides=[
        f"model={tiny_model_dir}", "served_model_name=main", "rollout.backend=hf",
        "request_timeout_s=0.05",
    ])  # fmt: skip
    with TestClient(create_app(cfg)) as client:
        body = {"model": "main", "prompt": "Question: 1 + 1?\nAnswer:", "temperature": 0}
        slow = client.post("/v1/completions", json={**body, "max_tokens": 400, "ignore_eos": True})
        assert slow.status_code == 504
        assert slow.json()["error"] == {
            "message": "the request took longer than this server's limit of 0.05 s "
            "(request_timeout_s)",
            "type": "timeout_error", "param": None, "code": None,
        }  # fmt: skip
        # The micro-batcher cannot stop a batch it is decoding: wait for it to end.
        while client.app.state.server.decoder.unfinished_requests():
            time.sleep(0.01)
        assert client.post("/v1/completions", json={**body, "max_tokens": 2}).status_code == 200
