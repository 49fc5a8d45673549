"""Configs: YAML + dotted overrides; every mistake names the key and where it came from."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from latentrl.config import (
    CoCoVaConfig,
    ConfigError,
    DemoConfig,
    DLRConfig,
    EvalConfig,
    LaSERConfig,
    RolloutConfig,
    TaskConfig,
    TinyModelConfig,
    load_config,
)


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_and_overrides_apply_in_order(tmp_path):
    path = write(tmp_path, "eval_problems: 100\nrollout:\n  backend: hf\n  hf_batch_size: 8\n")
    cfg = load_config(
        DemoConfig,
        path,
        ["rollout.hf_batch_size=16", "task.options.steps=3", "pretrain.learning_rate=1e-3"],
    )
    assert cfg.eval_problems == 100
    assert cfg.rollout == RolloutConfig(backend="hf", hf_batch_size=16)
    assert cfg.task.options == {"steps": 3}
    assert cfg.pretrain.learning_rate == 0.001
    assert isinstance(cfg.model, TinyModelConfig)


def test_a_partly_given_section_keeps_the_sections_own_defaults(tmp_path):
    # LaSER's task section defaults to gsm8k_retrieval, not TaskConfig's arith; giving only
    # the options (in the file or on the command line) must not reset the name.
    path = write(tmp_path, "model: org/m\ntask:\n  options: {data_dir: data}\n")
    assert load_config(LaSERConfig, path).task == TaskConfig(
        name="gsm8k_retrieval", options={"data_dir": "data"}
    )
    cfg = load_config(
        LaSERConfig, None, ["model=org/m", "tiny_task.chat_instruction=Add.", "task.options.k=5"]
    )
    assert cfg.tiny_task == TaskConfig(name="gsm8k", chat_instruction="Add.")
    assert cfg.task == TaskConfig(name="gsm8k_retrieval", options={"k": 5})


def test_the_loop_section_keeps_each_recipes_defaults_and_names_moved_keys(tmp_path):
    # One LoopConfig, each recipe's own defaults: a partly given loop keeps the rest of them.
    laser = load_config(LaSERConfig, None, ["model=org/m", "loop.steps=7"])
    assert (laser.loop.steps, laser.loop.lr_schedule, laser.loop.warmup_steps) == (7, "cosine", 20)
    cocova = load_config(CoCoVaConfig, write(tmp_path, "loop:\n  steps: 9\n"))
    assert (cocova.loop.steps, cocova.loop.learning_rate, cocova.loop.warmup_steps) == (9, 1e-3, 50)
    assert load_config(DLRConfig).loop.checkpoint_every == 50
    # A loop key at the top level, as configs had it before, points to its new place.
    with pytest.raises(ConfigError, match=r"^unknown key 'steps' \(in the command line\); did "
                       r"you mean 'loop.steps'\?$"):  # fmt: skip
        load_config(DLRConfig, None, ["steps=3"])
    with pytest.raises(ConfigError, match=r"^loop.warmup_steps: must be >= 0, got -1 \(in "):
        load_config(CoCoVaConfig, write(tmp_path, "loop: {warmup_steps: -1}\n"))


def test_int_is_accepted_for_float_and_lists_parse(tmp_path):
    cfg = load_config(
        RolloutConfig,
        None,
        ["cpu_kvcache_space_gib=2", "server_urls=[http://a:1, http://b:2]", "backend=vllm_server"],
    )
    assert cfg.cpu_kvcache_space_gib == 2.0 and isinstance(cfg.cpu_kvcache_space_gib, float)
    assert cfg.server_urls == ["http://a:1", "http://b:2"]


def test_optional_accepts_null():
    assert load_config(RolloutConfig, None, ["max_model_len=null"]).max_model_len is None


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("rollout:\n  bakend: hf\n", [], "unknown key 'rollout.bakend' (in {path}); known keys: "),
        (
            "",
            ["rollout.bakend=hf"],
            "unknown key 'rollout.bakend' (in the command line); known keys: ",
        ),
        ("eval_problems: many\n", [], "eval_problems: expected an integer, got 'many' (in {path})"),
        (
            "",
            ["eval_problems=1.5"],
            "eval_problems: expected an integer, got 1.5 (in the command line)",
        ),
        (
            "rollout:\n  backend: tensorrt\n",
            [],
            "rollout.backend: expected one of 'auto', 'vllm', 'vllm_server', 'hf', got 'tensorrt' (in {path})",
        ),
        ("rollout: hf\n", [], "rollout: expected a section (mapping), got 'hf' (in {path})"),
        (
            "model:\n  num_heads: 4\n",
            [],
            "model.num_heads: head_dim = hidden_size / num_heads = 32, but vLLM's CPU attention needs 64 (in {path})",
        ),
        ("", ["eval_problems=0"], "eval_problems: must be positive (in the command line)"),
        (
            "",
            ["rollout.enable_sleep_mode=yes please"],
            "rollout.enable_sleep_mode: expected true or false, got 'yes please' (in the command line)",
        ),
        ("", ["rollout"], "override 'rollout': expected key.sub=value"),
        (
            "eval_problems: 5\n",
            ["eval_problems.x=1"],
            "override 'eval_problems.x=1': eval_problems is a value, not a section",
        ),
        (
            "",
            ["eval_problems.x=1"],
            "eval_problems: expected an integer, got {{'x': 1}} (in the command line)",
        ),
    ],
)
def test_errors_name_key_and_source(tmp_path, text, overrides, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(DemoConfig, path, overrides)
    assert str(err.value).startswith(message.format(path=path))


def test_missing_required_key_names_file(tmp_path):
    path = write(tmp_path, "limit: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(EvalConfig, path)
    assert str(err.value) == f"missing required key 'model' (in {path})"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(DemoConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(DemoConfig, write(tmp_path, "a: [1,\n"))
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_config(DemoConfig, write(tmp_path, "- 1\n- 2\n"))


def test_shipped_configs_load():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "configs"
    cfg = load_config(DemoConfig, configs / "demo.yaml")
    assert cfg.task.name == "arith"
    # The real-model DLR recipe: SmolLM2's tokenizer has no latent markers, so it must not
    # ask for them (the trainer would stop at setup).
    dlr = load_config(DLRConfig, configs / "dlr_arith_smollm2.yaml")
    assert dlr.main_model == "smollm2-135m-instruct" and not dlr.plugin.use_markers
    assert dlr.task.options == {"steps": 1, "ops": "+", "max_value": 99}
    # LaSER on SmolLM2 and its baseline: a fair pair differs only in the latent view, the
    # terms that read the explicit view, and where it writes.
    laser, infonce = (
        asdict(load_config(LaSERConfig, configs / f"laser_gsm8k_smollm2{suffix}.yaml"))
        for suffix in ("", "_infonce")
    )
    assert laser["model"] == "smollm2-135m-instruct" and laser["retriever"]["lora"]
    assert laser["task"]["options"]["train_solutions"] == 0
    for config in (laser, infonce):
        del config["output_dir"], config["retriever"]["latent_documents"]
        for term in ("explicit_weight", "distill_weight"):
            del config["loss"][term]
    assert (laser["retriever"].pop("latent_steps"), infonce["retriever"].pop("latent_steps")) == (
        2,
        1,
    )
    assert laser == infonce
