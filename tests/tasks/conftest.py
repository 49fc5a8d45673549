"""Shared fixtures for the task tests: where the shared data lives, a clean registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from latentrl.tasks import registry

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """``$LATENTRL_SHARED_DATA``, else ``shared/data`` beside the repository (as in CI)."""
    return Path(os.environ.get("LATENTRL_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    path = shared_data_dir() / "gsm8k"
    if not (path / "test.jsonl").is_file():
        pytest.skip(f"GSM8K data not found in {path} (set LATENTRL_SHARED_DATA)")
    return path


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks a test registers disappear after it."""
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))


@pytest.fixture
def no_gsm8k_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATENTRL_GSM8K_DIR", raising=False)
