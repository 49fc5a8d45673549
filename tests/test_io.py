"""Atomic writes: a crash mid-save leaves the previous folder whole and no staging behind."""

from __future__ import annotations

import pytest

from latentrl.io import atomic_folder, cache_key, config_identity, finished_run, write_json


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


def test_finished_run_is_reused_only_with_the_settings_it_ran_with(tmp_path):
    config = tmp_path / "laser.yaml"
    config.write_text("steps: 30\n")
    ran_with = {"config": config_identity(config), "seed": 0}
    record_path = tmp_path / "run" / "per_query.json"
    assert finished_run(record_path, ran_with) is None

    write_json(record_path, {"ran_with": ran_with, "ndcg@10": 0.5})
    assert finished_run(record_path, ran_with) == {"ran_with": ran_with, "ndcg@10": 0.5}

    config.write_text("steps: 60\n")  # same file name, other settings
    edited = {"config": config_identity(config), "seed": 0}
    assert edited["config"].startswith("laser.yaml@") and edited != ran_with
    with pytest.raises(ValueError, match=r"per_query.json ran with .*use another --output-dir"):
        finished_run(record_path, edited)


def test_cache_keys_stay_what_users_caches_were_built_under():
    # Users' cached tiny models and rationales are named by this key: it must not drift.
    assert cache_key({"steps": 3, "model": "m"}) == "daa15af7259feeae"
