"""Atomic writes: a crash mid-save leaves the previous folder whole and no staging behind."""

from __future__ import annotations

import pytest

from latentrl.io import atomic_folder


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "plugin"
    with atomic_folder(target) as staging:
        (staging / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"

    with pytest.raises(RuntimeError), atomic_folder(target) as staging:
        (staging / "a.txt").write_text("half")
        raise RuntimeError("crash mid-save")
    assert (target / "a.txt").read_text() == "first"

    with atomic_folder(target) as staging:
        (staging / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["plugin"]  # no staging or old copies left
