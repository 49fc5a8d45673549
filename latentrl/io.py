"""Atomic writes (a crash mid-write never leaves a half-written file or folder behind), the
cache folder, and the finished-run records that benchmarks reuse."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


@contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Yield a staging folder beside ``folder``; on success it replaces ``folder`` whole.

    An existing ``folder`` is moved aside before the swap and deleted after it, so there is
    never a moment without a complete folder; on failure the staging folder is removed and
    ``folder`` is left as it was.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        yield staging
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}-old-", dir=folder.parent))
            os.replace(folder, old / folder.name)
            os.replace(staging, folder)
            shutil.rmtree(old)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def default_cache_dir() -> Path:
    """``$LATENTRL_CACHE`` or ``~/.cache/latentrl``: built models, prepared named models and
    generated rationales."""
    return Path(os.environ.get("LATENTRL_CACHE", Path.home() / ".cache" / "latentrl"))


def cache_key(settings: dict) -> str:
    """The 16 hex digits that name a cached artefact after every setting that shapes it.

    >>> cache_key({"b": 1, "a": [2]}) == cache_key({"a": [2], "b": 1})
    True
    """
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def config_identity(path: str | Path) -> str:
    """``NAME@DIGEST``: a config file by its name and content, so an edited file with the
    same name is not taken for the one a finished run used."""
    path = Path(path)
    return f"{path.name}@{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def finished_run(record_path: str | Path, ran_with: dict) -> dict | None:
    """The JSON record a finished run left at ``record_path`` (``None`` if there is none),
    for benchmarks that reuse finished runs so an interrupted comparison goes on where it
    stopped. A record whose ``ran_with`` settings differ is refused rather than mixed into
    a table of other settings.
    """
    record_path = Path(record_path)
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    if record.get("ran_with") != ran_with:
        raise ValueError(
            f"{record_path} ran with {record.get('ran_with')}, not {ran_with}: use another "
            "--output-dir, or delete the file to rerun it"
        )
    return record
