"""The serving layer: models and plugins, prompts, limits, and OpenAI-shaped responses.

One frozen main model decodes every request through the shared rollout engine; a request
naming a plugin first runs the plugin's assistant over its question and decodes the
main model from the resulting ``prompt_embeds`` (see :mod:`latentrl.serve.batcher`).

Where prompts come from:

- ``/v1/completions``: the prompt is the main model's text as given. A plugin's assistant
  reads the question inside it: the part the ``prompt_template`` placeholder stands for
  when the prompt has the template's shape, else the whole prompt.
- ``/v1/chat/completions``: the last message must be the user's; its content is the
  question. The prompt is the tokenizer's chat template when it has one, else earlier
  turns as ``role: content`` lines followed by the prompt template applied to the question.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from latentrl.config import ConfigError, ServeConfig
from latentrl.models.latent_plugin import LatentPlugin
from latentrl.models.named import resolve_model
from latentrl.rollout import Completion, RequestOutput, RolloutError, make_engine
from latentrl.serve.batcher import Job, MicroBatcher
from latentrl.serve.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    OpenAIError,
    SamplingRequest,
    new_id,
    now,
    usage_counts,
)

log = logging.getLogger(__name__)


class Metrics:
    """Prometheus counters and histograms of one server (its own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "latentrl_requests", "HTTP requests answered", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "latentrl_request_latency_seconds", "Time to answer a request", ["endpoint"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "latentrl_prompt_tokens", "Prompt positions decoded", ["model"], registry=self.registry
        )
        self.completion_tokens = Counter(
            "latentrl_completion_tokens", "Tokens generated", ["model"], registry=self.registry
        )
        self.batch_prompts = Histogram(
            "latentrl_batch_prompts", "Prompts per engine call (micro-batch size)",
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )  # fmt: skip


@dataclass
class Decoded:
    """A request's outputs, one per prompt, with the model id it was served by."""

    model: str
    outputs: list[RequestOutput]

    @property
    def completions(self) -> list[Completion]:
        """All choices in OpenAI's order: prompt by prompt, the n samples of each."""
        return [c for output in self.outputs for c in output.completions]

    def usage(self) -> dict:
        prompt = sum(o.prompt_len for o in self.outputs)
        return usage_counts(prompt, sum(len(c.token_ids) for c in self.completions))


class ModelServer:
    """The main model, its loaded plugins, the micro-batcher and the metrics."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.model_name = cfg.served_model_name or cfg.model
        self.model_path = resolve_model(cfg.model)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.engine = make_engine(self.model_path, cfg.rollout)
        self.max_prompt_tokens = cfg.max_prompt_tokens or self.engine.max_model_len - 1
        self.metrics = Metrics()
        self.plugins: dict[str, LatentPlugin] = {}
        self.plugin_paths: dict[str, str] = {}
        self._embeddings: nn.Module | None = None
        self._embeddings_lock = threading.Lock()
        self._plugins_lock = threading.Lock()  # one load at a time: names stay unique
        self.batcher = MicroBatcher(
            self.engine,
            self.tokenizer,
            self.main_embeddings,
            max_batch_prompts=cfg.max_batch_prompts,
            wait_s=cfg.batch_wait_ms / 1000,
            observe_batch=self.metrics.batch_prompts.observe,
        )
        self.created = now()
        for name, path in cfg.plugins.items():
            try:
                self.load_plugin(name, path)
            except OpenAIError as err:
                self.close()
                raise ConfigError(f"plugins.{name}: {err.message}") from None

    def close(self) -> None:
        self.batcher.close()
        self.engine.close()

    # ---- plugins ------------------------------------------------------------------------

    def main_embeddings(self) -> nn.Module:
        """The main model's input embeddings, loaded as ``latentrl eval`` loads them."""
        with self._embeddings_lock:
            if self._embeddings is None:
                main = AutoModelForCausalLM.from_pretrained(self.model_path)
                self._embeddings = main.get_input_embeddings()
            return self._embeddings

    def load_plugin(self, name: str, path: str) -> dict:
        """Load the plugin folder ``path`` as model ``name``; raises :class:`OpenAIError`."""
        with self._plugins_lock:
            return self._load_plugin(name, path)

    def _load_plugin(self, name: str, path: str) -> dict:
        if name == self.model_name or name in self.plugins:
            raise OpenAIError(409, f"model name {name!r} is already in use", param="name")
        try:
            plugin = LatentPlugin.from_pretrained(path, main_model=self.cfg.model)
        except (OSError, ValueError) as err:
            raise OpenAIError(400, f"cannot load plugin {name!r}: {err}", param="path") from None
        if plugin.config.main_hidden_size != self.engine.hidden_size:
            raise OpenAIError(
                400,
                f"plugin {name!r} projects into width {plugin.config.main_hidden_size}, but the "
                f"main model's hidden size is {self.engine.hidden_size}",
                param="path",
            )
        self.main_embeddings()
        self.plugins[name] = plugin
        self.plugin_paths[name] = str(path)
        log.info("loaded plugin %s from %s", name, path)
        return self.model_card(name)

    def unload_plugin(self, name: str) -> dict:
        """Requests already decoding with it finish; new ones get 404."""
        if name not in self.plugins:
            raise OpenAIError(404, f"no plugin named {name!r} is loaded", code="model_not_found")
        del self.plugins[name], self.plugin_paths[name]
        log.info("unloaded plugin %s", name)
        return {"id": name, "object": "model", "deleted": True}

    def model_card(self, name: str) -> dict:
        if name == self.model_name:
            root, parent = self.cfg.model, None
        else:
            root, parent = self.plugin_paths[name], self.model_name
        return {
            "id": name,
            "object": "model",
            "created": self.created,
            "owned_by": "latentrl",
            "root": root,
            "parent": parent,
            "max_model_len": self.engine.max_model_len,
        }

    def list_models(self) -> dict:
        names = [self.model_name, *self.plugins]
        return {"object": "list", "data": [self.model_card(name) for name in names]}

    def _resolve(self, model: str) -> LatentPlugin | None:
        if model == self.model_name:
            return None
        if model in self.plugins:
            return self.plugins[model]
        available = ", ".join(repr(n) for n in [self.model_name, *self.plugins])
        raise OpenAIError(
            404,
            f"the model {model!r} does not exist; available: {available}",
            param="model",
            code="model_not_found",
        )

    # ---- decoding -------------------------------------------------------------------------

    async def decode(
        self, request: SamplingRequest, prompts: Sequence[str], questions: Sequence[str],
        max_tokens: int | None,
    ) -> Decoded:  # fmt: skip
        """Decode ``prompts`` for ``request.model`` (questions feed a plugin's assistant)."""
        plugin = self._resolve(request.model)
        token_prompts = [self._encode(prompt) for prompt in prompts]
        if max_tokens is None:
            extra = 0 if plugin is None else plugin.settings.num_latents + 2
            longest = max(len(ids) for ids in token_prompts) + extra
            max_tokens = max(1, min(self.cfg.max_tokens_limit, self.engine.max_model_len - longest))
        elif max_tokens > self.cfg.max_tokens_limit:
            raise OpenAIError(
                400,
                f"max_tokens {max_tokens} is larger than this server's limit of "
                f"{self.cfg.max_tokens_limit}",
                param="max_tokens",
            )
        try:
            params = request.to_sampling_params(max_tokens)
        except RolloutError as err:
            raise OpenAIError(400, str(err)) from None
        if plugin is None:
            job = Job(token_prompts, params)
        else:
            rows = [{"question": q, "prompt": p} for q, p in zip(questions, prompts, strict=True)]
            job = Job([], params, plugin, rows)
        try:
            outputs = await self.batcher.submit(job)
        except RolloutError as err:
            raise OpenAIError(400, str(err)) from None
        decoded = Decoded(request.model, outputs)
        counts = decoded.usage()
        self.metrics.prompt_tokens.labels(request.model).inc(counts["prompt_tokens"])
        self.metrics.completion_tokens.labels(request.model).inc(counts["completion_tokens"])
        return decoded

    def _encode(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not ids:
            raise OpenAIError(400, "the prompt is empty", param="prompt")
        if len(ids) > self.max_prompt_tokens:
            raise OpenAIError(
                400,
                f"the prompt has {len(ids)} tokens, more than this server's limit of "
                f"{self.max_prompt_tokens}",
                param="prompt",
            )
        return ids

    async def complete(self, request: CompletionRequest) -> Decoded:
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        questions = [question_in(p, self.cfg.prompt_template) for p in prompts]
        return await self.decode(request, prompts, questions, request.max_tokens)

    async def chat(self, request: ChatCompletionRequest) -> Decoded:
        prompt, question = chat_prompt(request.messages, self.tokenizer, self.cfg.prompt_template)
        max_tokens = request.max_completion_tokens or request.max_tokens
        return await self.decode(request, [prompt], [question], max_tokens)

    # ---- responses ----------------------------------------------------------------------

    def completion_response(self, decoded: Decoded) -> dict:
        choices = [
            {"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
            for i, c in enumerate(decoded.completions)
        ]
        return {
            "id": new_id("cmpl"), "object": "text_completion", "created": now(),
            "model": decoded.model, "choices": choices, "usage": decoded.usage(),
        }  # fmt: skip

    def chat_response(self, decoded: Decoded) -> dict:
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(decoded.completions)
        ]
        return {
            "id": new_id("chatcmpl"), "object": "chat.completion", "created": now(),
            "model": decoded.model, "choices": choices, "usage": decoded.usage(),
        }  # fmt: skip

    async def stream(self, decoded: Decoded, chat: bool, include_usage: bool) -> AsyncIterator[str]:
        """Server-sent events: each choice's text piece by piece (one piece per token),
        then ``[DONE]``. The engine decodes whole completions, so the pieces are cut
        from the finished text rather than sent while it is being generated."""
        base = {
            "id": new_id("chatcmpl" if chat else "cmpl"),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": now(),
            "model": decoded.model,
        }

        def event(choices: list[dict], **extra) -> str:
            return f"data: {json.dumps({**base, 'choices': choices, **extra})}\n\n"

        for index, completion in enumerate(decoded.completions):
            if chat:
                yield event([{"index": index, "delta": {"role": "assistant", "content": ""},
                              "logprobs": None, "finish_reason": None}])  # fmt: skip
            for piece in text_pieces(self.tokenizer, completion):
                body = {"delta": {"content": piece}} if chat else {"text": piece}
                yield event([{"index": index, **body, "logprobs": None, "finish_reason": None}])
                await asyncio.sleep(0)  # let other requests' streams interleave
            body = {"delta": {}} if chat else {"text": ""}
            yield event([{"index": index, **body, "logprobs": None,
                          "finish_reason": completion.finish_reason}])  # fmt: skip
        if include_usage:
            yield event([], usage=decoded.usage())
        yield "data: [DONE]\n\n"


def question_in(prompt: str, template: str) -> str:
    """The question a prompt built from ``template`` was made of (else the whole prompt).

    >>> question_in("Question: 2 + 3?\\nAnswer:", "Question: {question}\\nAnswer:")
    '2 + 3?'
    >>> question_in("What is 2 + 3?", "Question: {question}\\nAnswer:")
    'What is 2 + 3?'
    """
    before, after = template.split("{question}", 1)
    fits = len(prompt) >= len(before) + len(after)
    if fits and prompt.startswith(before) and prompt.endswith(after):
        return prompt[len(before) : len(prompt) - len(after)]
    return prompt


def chat_prompt(messages: Sequence[ChatMessage], tokenizer, template: str) -> tuple[str, str]:
    """The main model's prompt for a conversation, and its question (the last user turn).

    >>> from latentrl.serve.protocol import ChatMessage as M
    >>> class NoTemplate: chat_template = None
    >>> chat_prompt([M(role="system", content="Be brief."), M(role="user", content="1 + 1?")],
    ...             NoTemplate(), "Question: {question}\\nAnswer:")
    ('system: Be brief.\\nQuestion: 1 + 1?\\nAnswer:', '1 + 1?')
    """
    if messages[-1].role != "user":
        raise OpenAIError(400, "messages: the last message must be the user's", param="messages")
    question = messages[-1].content
    if tokenizer.chat_template:
        turns = [{"role": m.role, "content": m.content} for m in messages]
        prompt = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return prompt, question
    earlier = "".join(f"{m.role}: {m.content}\n" for m in messages[:-1])
    return earlier + template.replace("{question}", question), question


def text_pieces(tokenizer, completion: Completion) -> list[str]:
    """``completion.text`` cut into about one piece per generated token, for streaming.

    Tokens are decoded incrementally over a short window, as vLLM's detokenizer does
    (linear in the length, not quadratic): a token that ends inside a multi-byte character
    adds nothing until the character is complete. The pieces are slices of
    ``completion.text`` itself, so they always join to exactly it, stop strings cut.
    """
    text, ids = completion.text, completion.token_ids
    pieces: list[str] = []
    streamed = 0  # characters of the decoded output seen so far
    sent = 0  # characters of ``text`` sent
    prefix, read = 0, 0  # the window: ids[prefix:read] are decoded, ids[read:] are new
    for end in range(1, len(ids) + 1):
        before = tokenizer.decode(ids[prefix:read], skip_special_tokens=True)
        after = tokenizer.decode(ids[prefix:end], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith("\ufffd"):
            continue  # nothing new yet, or an incomplete character
        streamed += len(after) - len(before)
        prefix, read = read, end
        if min(streamed, len(text)) > sent:
            pieces.append(text[sent : min(streamed, len(text))])
            sent = min(streamed, len(text))
    if sent < len(text):
        pieces.append(text[sent:])
    return pieces
