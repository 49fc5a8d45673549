"""The serving layer: models and plugins, prompts, limits, and OpenAI-shaped responses.

One frozen main model decodes every request; a request naming a plugin first runs the
plugin's assistant over its question and decodes the main model from the resulting
``prompt_embeds``. How requests reach the engine (vLLM's async engine, or a micro-batcher
over the synchronous one) is :mod:`latentrl.serve.decoding`'s business.

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
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from latentrl.config import ConfigError, ServeConfig
from latentrl.models.latent_plugin import LatentPlugin
from latentrl.models.named import resolve_model
from latentrl.rollout import RolloutError
from latentrl.rollout.base import CompletionDelta, prompt_length
from latentrl.serve.decoding import Job, LatentBatcher, make_decoder
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
        sizes = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
        self.batch_prompts = Histogram(
            "latentrl_batch_prompts", "Prompts per engine call (micro-batcher only)",
            registry=self.registry, buckets=sizes,
        )  # fmt: skip
        self.plugin_batch_prompts = Histogram(
            "latentrl_plugin_batch_prompts", "Prompts per pass of a plugin's assistant",
            registry=self.registry, buckets=sizes,
        )  # fmt: skip
        self.decoding = Gauge(
            "latentrl_requests_decoding", "Requests being decoded now", registry=self.registry
        )
        self.engine_requests = Gauge(
            "latentrl_engine_requests", "Requests the engine holds, waiting or decoding",
            registry=self.registry,
        )  # fmt: skip
        self.time_to_first_token = Histogram(
            "latentrl_time_to_first_token_seconds", "From decoding start to the first token",
            ["model"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip


@dataclass
class Decoding:
    """One request being decoded: the model serving it, its job, its deltas as they come."""

    model: str
    job: Job
    deltas: AsyncIterator[CompletionDelta] | None = None
    completion_tokens: int = 0
    """Tokens generated so far, over all choices."""

    def usage(self) -> dict:
        prompt_tokens = sum(prompt_length(prompt) for prompt in self.job.prompts)
        return usage_counts(prompt_tokens, self.completion_tokens)


class ModelServer:
    """The main model, its loaded plugins, the decoder and the metrics.

    :meth:`start` must run in the event loop that serves the requests (the async engine's
    output handler is a task of that loop); plugins are loaded before it, so a bad plugin
    folder stops the server before the engine starts.
    """

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.model_name = cfg.served_model_name or cfg.model
        self.model_path = resolve_model(cfg.model)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.metrics = Metrics()
        self.plugins: dict[str, LatentPlugin] = {}
        self.plugin_paths: dict[str, str] = {}
        self._embeddings: nn.Module | None = None
        self._embeddings_lock = threading.Lock()
        self._plugins_lock = threading.Lock()  # one load at a time: names stay unique
        latents = LatentBatcher(
            self.main_embeddings, self.tokenizer, self.metrics.plugin_batch_prompts.observe
        )
        self.decoder = make_decoder(
            self.model_path, cfg, latents, self.metrics.batch_prompts.observe
        )
        self.engine = self.decoder.engine
        self.metrics.engine_requests.set_function(self.decoder.unfinished_requests)
        self.max_prompt_tokens = cfg.max_prompt_tokens or self.engine.max_model_len - 1
        self.created = now()
        for name, path in cfg.plugins.items():
            try:
                self.load_plugin(name, path)
            except OpenAIError as err:
                self.close()
                raise ConfigError(f"plugins.{name}: {err.message}") from None

    async def start(self) -> None:
        await self.decoder.start()

    def close(self) -> None:
        self.decoder.close()

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

    def decode(
        self, request: SamplingRequest, prompts: Sequence[str], questions: Sequence[str],
        max_tokens: int | None,
    ) -> Decoding:  # fmt: skip
        """Start decoding ``prompts`` for ``request.model`` (questions feed a plugin's
        assistant). Refuses a bad request here, with an :class:`OpenAIError`; the engine's
        own refusals come with the first delta."""
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
        job = Job(new_id("req"), params, token_prompts)
        if plugin is not None:
            job.plugin = plugin
            job.rows = [
                {"question": q, "prompt": p} for q, p in zip(questions, prompts, strict=True)
            ]
        decoding = Decoding(request.model, job)
        decoding.deltas = self._deltas(decoding, incremental=request.stream)
        return decoding

    async def _deltas(
        self, decoding: Decoding, incremental: bool
    ) -> AsyncIterator[CompletionDelta]:
        """The decoder's deltas, with the engine's refusals as OpenAI errors, the request
        timeout, and the metrics of what was decoded."""
        started = time.perf_counter()
        limit = self.cfg.request_timeout_s
        self.metrics.decoding.inc()
        try:
            async with aclosing(self.decoder.decode(decoding.job, incremental)) as deltas:
                while True:
                    try:
                        left = None if limit is None else started + limit - time.perf_counter()
                        delta = await asyncio.wait_for(anext(deltas), left)
                    except StopAsyncIteration:
                        break
                    except RolloutError as err:
                        raise OpenAIError(400, str(err)) from None
                    except TimeoutError:
                        raise OpenAIError(
                            504,
                            f"the request took longer than this server's limit of {limit:g} s "
                            "(request_timeout_s)",
                            type="timeout_error",
                        ) from None
                    if incremental and decoding.completion_tokens == 0 and delta.token_ids:
                        self.metrics.time_to_first_token.labels(decoding.model).observe(
                            time.perf_counter() - started
                        )
                    decoding.completion_tokens += len(delta.token_ids)
                    yield delta
        finally:
            self.metrics.decoding.dec()
        counts = decoding.usage()
        self.metrics.prompt_tokens.labels(decoding.model).inc(counts["prompt_tokens"])
        self.metrics.completion_tokens.labels(decoding.model).inc(counts["completion_tokens"])

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

    def complete(self, request: CompletionRequest) -> Decoding:
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        questions = [question_in(p, self.cfg.prompt_template) for p in prompts]
        return self.decode(request, prompts, questions, request.max_tokens)

    def chat(self, request: ChatCompletionRequest) -> Decoding:
        prompt, question = chat_prompt(request.messages, self.tokenizer, self.cfg.prompt_template)
        max_tokens = request.max_completion_tokens or request.max_tokens
        return self.decode(request, [prompt], [question], max_tokens)

    # ---- responses ----------------------------------------------------------------------

    async def response(self, decoding: Decoding, chat: bool) -> dict:
        """The whole answer, once every choice has finished."""
        texts: dict[int, list[str]] = {}
        finish_reasons: dict[int, str | None] = {}
        async for delta in decoding.deltas:
            texts.setdefault(delta.index, []).append(delta.text)
            finish_reasons[delta.index] = delta.finish_reason
        choices = []
        for index in sorted(texts):
            text, reason = "".join(texts[index]), finish_reasons[index]
            body = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            choices.append({"index": index, **body, "logprobs": None, "finish_reason": reason})
        return {
            "id": new_id("chatcmpl" if chat else "cmpl"),
            "object": "chat.completion" if chat else "text_completion",
            "created": now(), "model": decoding.model, "choices": choices,
            "usage": decoding.usage(),
        }  # fmt: skip

    async def stream(
        self, decoding: Decoding, chat: bool, include_usage: bool
    ) -> AsyncIterator[str]:
        """Server-sent events as OpenAI sends them: each choice's text as it is generated
        (chat: a first delta with the role), a last chunk with its finish reason, the usage
        when asked for, then ``[DONE]``. An error before the first event is raised (the
        response has not started); after it, it is sent as an event."""
        base = {
            "id": new_id("chatcmpl" if chat else "cmpl"),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": now(),
            "model": decoding.model,
        }

        def event(choices: list[dict], **extra) -> str:
            return f"data: {json.dumps({**base, 'choices': choices, **extra})}\n\n"

        def choice(index: int, content: dict, finish_reason: str | None = None) -> dict:
            body = {"delta": content} if chat else {"text": content.get("content", "")}
            return {"index": index, **body, "logprobs": None, "finish_reason": finish_reason}

        begun: set[int] = set()
        try:
            async for delta in decoding.deltas:
                if chat and delta.index not in begun:
                    yield event([choice(delta.index, {"role": "assistant", "content": ""})])
                begun.add(delta.index)
                if delta.text:
                    yield event([choice(delta.index, {"content": delta.text})])
                if delta.finish_reason is not None:
                    yield event([choice(delta.index, {}, delta.finish_reason)])
        except OpenAIError as err:
            if not begun:
                raise
            yield f"data: {json.dumps(err.body())}\n\n"
        else:
            if include_usage:
                yield event([], usage=decoding.usage())
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
