"""Prompt building and stream slicing, without a server."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from latentrl.cli import main as cli_main
from latentrl.config import ConfigError, ServeConfig, load_config
from latentrl.rollout import Completion
from latentrl.serve import serving
from latentrl.serve.decoding import text_pieces
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
