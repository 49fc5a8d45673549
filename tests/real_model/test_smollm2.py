"""SmolLM2-135M-Instruct end to end: conversion, engine parity, chat prompts in eval, serving."""

from __future__ import annotations

import json
import os
import sys

import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from latentrl.cli import main
from latentrl.config import RolloutConfig
from latentrl.models.named import NAMED_MODELS, RECORD_FILE, find_gguf
from latentrl.rollout import SamplingParams, make_engine
from tests.conftest import _free_port, running_server
from tests.real_model.conftest import MODEL, NUM_PROMPTS
from tests.tasks.conftest import shared_data_dir

pytestmark = pytest.mark.real_model

GREEDY = SamplingParams(temperature=0.0, max_tokens=32)


def token_ids(outputs) -> list[list[int]]:
    return [out.completions[0].token_ids for out in outputs]


def test_prepared_folder_is_the_gguf_model(smollm2_dir, tmp_path):
    """The safetensors folder computes exactly what transformers' GGUF loader computes."""
    record = json.loads((smollm2_dir / RECORD_FILE).read_text())
    assert record["sha256"] == NAMED_MODELS[MODEL].sha256
    prepared = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert type(prepared).__name__ == "LlamaForCausalLM"
    assert prepared.config.num_hidden_layers == 30
    assert sum(p.numel() for p in prepared.parameters()) == 134_515_008
    assert getattr(prepared.config, "quantization_config", None) is None  # a plain folder
    gguf = find_gguf(NAMED_MODELS[MODEL], tmp_path)
    original = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(prepared(ids).logits, original(ids).logits)


def test_vllm_and_transformers_agree_on_16_chat_prompts(
    smollm2_hf, smollm2_vllm, smollm2_dir, smollm2_server_url, chat_prompts
):
    hf = token_ids(smollm2_hf.generate(chat_prompts, GREEDY))
    assert len(hf) == NUM_PROMPTS
    assert token_ids(smollm2_vllm.generate(chat_prompts, GREEDY)) == hf
    server = server_engine(smollm2_dir, smollm2_server_url)
    assert token_ids(server.generate(chat_prompts, GREEDY)) == hf


def server_engine(model_dir, url):
    return make_engine(model_dir, RolloutConfig(backend="vllm_server", server_urls=[url]))


@pytest.mark.parametrize("backend", ["hf", "vllm", "vllm_server"])
def test_prompt_embeds_decode_like_their_tokens(
    backend, smollm2_hf, smollm2_vllm, smollm2_dir, smollm2_server_url, chat_prompts
):
    if backend == "vllm_server":
        engine = server_engine(smollm2_dir, smollm2_server_url)
    else:
        engine = {"hf": smollm2_hf, "vllm": smollm2_vllm}[backend]
    embed = smollm2_hf.model.get_input_embeddings()
    with torch.no_grad():
        embeds = [embed(torch.tensor(ids)) for ids in chat_prompts]
    from_tokens = token_ids(engine.generate(chat_prompts, GREEDY))
    assert token_ids(engine.generate(embeds, GREEDY)) == from_tokens


def test_eval_prompts_through_the_chat_template(smollm2_server_url, tmp_path, capsys):
    data = shared_data_dir() / "gsm8k"
    if not (data / "test.jsonl").is_file():
        pytest.skip(f"GSM8K data not found in {data}")
    out = tmp_path / "eval"
    code = main([
        "eval", "--model", MODEL, "--task", "gsm8k", "--limit", "3", "--output-dir", str(out),
        f"task.options.data_dir={data}", "fewshot=1", "max_tokens=48",
        "rollout.backend=vllm_server", f"rollout.server_urls=[{smollm2_server_url}]",
    ])  # fmt: skip
    assert code == 0
    assert "chat prompts, 1-shot" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["model"], summary["chat_template"], summary["num_problems"]) == (MODEL, True, 3)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    prompt = samples[0]["prompt"]
    # system turn, the worked example as a user/assistant pair, then the question
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.count("<|im_start|>user\n") == 2 and prompt.count("<|im_start|>assistant\n") == 2
    assert prompt.endswith("followed by the number.<|im_end|>\n<|im_start|>assistant\n")
    assert all(s["completion"] and s["tokens"] <= 48 for s in samples)


@pytest.fixture(scope="module")
def served_smollm2(smollm2_dir, tmp_path_factory):
    """``latentrl serve --model smollm2-135m-instruct`` (default backend: in-process vLLM)."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve-smollm2") / "server.log"
    command = [sys.executable, "-m", "latentrl.cli", "serve", "--model", MODEL, "--port", str(port),
               "rollout.cpu_kvcache_space_gib=1"]  # fmt: skip
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    url = f"http://127.0.0.1:{port}"
    with running_server(command, url, log_path, env, "latentrl serve", timeout_s=300):
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_the_openai_client_chats_with_the_served_model(served_smollm2, smollm2_hf):
    assert [model.id for model in served_smollm2.models.list()] == [MODEL]
    messages = [{"role": "user", "content": "What is 12 + 7? Reply with the number only."}]
    reply = served_smollm2.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=24
    )
    # the chat template applied, decoded greedily: what transformers decodes from it
    prompt = smollm2_hf.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    ids = smollm2_hf.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    expected = smollm2_hf.generate([ids], SamplingParams(temperature=0, max_tokens=24))
    assert reply.choices[0].message.content == expected[0].completions[0].text
    assert reply.choices[0].message.role == "assistant"

    stream = served_smollm2.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=24, stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len(pieces) > 2 and "".join(pieces) == reply.choices[0].message.content
