"""DLR trainer: value-head filtering, config validation, frozen main model, exact resume, plugin I/O."""

from __future__ import annotations

import json

import pytest
import torch

from latentrl.cli import main as cli_main
from latentrl.config import ConfigError, DLRConfig, load_config
from latentrl.models.latent_plugin import LatentPlugin
from latentrl.models.loading import fingerprint
from latentrl.trainers.dlr import DLRTrainer, select_for_decoding
from latentrl.trainers.metrics import read_metrics
from tests.conftest import REPO_ROOT, TEST_TASK_OPTIONS

CONFIG = REPO_ROOT / "configs" / "dlr_arith_tiny.yaml"
# Time-dependent metrics differ between runs; everything else must match exactly.
TIMING_KEYS = {"sample_time", "decode_time", "reward_time", "update_time", "step_time"}


def small_run(model_dir, output_dir, *overrides):
    options = [f"task.options.{k}={v}" for k, v in TEST_TASK_OPTIONS.items()]
    return [
        f"main_model={model_dir}", f"output_dir={output_dir}", "questions_per_step=4",
        "group_size=4", "decode_k=4", "eval_problems=8", "decode_max_tokens=8",
        "rollout.backend=hf", "loop.checkpoint_every=2", "warm_start_steps=0", *options, *overrides,
    ]  # fmt: skip


def test_select_for_decoding_keeps_top_k_by_value():
    values = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.7, 0.2, 0.8, 0.0]])
    uniforms = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.4, 0.6]])
    chosen = select_for_decoding(values, k=2, explore=0, uniforms=uniforms)
    assert chosen.tolist() == [[1, 2], [2, 0]]
    assert (
        select_for_decoding(values, k=4, explore=0, uniforms=uniforms).tolist()
        == [[0, 1, 2, 3]] * 2
    )
    explored = select_for_decoding(values, k=3, explore=1, uniforms=uniforms)
    assert explored[:, :2].tolist() == [[1, 2], [2, 0]]  # the best two, then one of the rest
    # The rest in value order are [3, 0] and [1, 3]; the lower uniform picks 0 and 1.
    assert explored[:, 2].tolist() == [0, 1]
    # The indices are made where the values live (on a GPU in training): "meta" stands in.
    for k in (2, 4):
        picks = select_for_decoding(values.to("meta"), k, 0, uniforms.to("meta"))
        assert picks.device.type == "meta"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "decode_k=16",
            "decode_k: K = 16 exceeds group_size G = 8 (can't decode more samples than are drawn)",
        ),
        ("kl_coef=-0.1", "kl_coef: must be >= 0, got -0.1"),
        ("format_weight=-1", "format_weight: must be >= 0, got -1.0"),
        (
            "contrastive=supcon",
            "contrastive: expected one of 'none', 'reward_infonce', 'mv_infonce', 'mv_dhel', got 'supcon'",
        ),
        ("clip_eps=0", "clip_eps: must be positive"),
    ],
)
def test_bad_config_fails_before_models_load(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(DLRConfig, CONFIG, [override, "main_model=/nonexistent"])
    assert str(err.value).startswith(message)


def test_projector_none_with_width_mismatch_fails_before_weights_load(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_loading)
    cfg = load_config(
        DLRConfig,
        CONFIG,
        [f"main_model={tiny_model_dir}", "plugin.projector=none", "plugin.latent_dim=32"],
    )
    with pytest.raises(
        ConfigError,
        match=r"plugin.projector: 'none' injects latents as they are, but latent_dim 32",
    ):
        DLRTrainer(cfg).setup()


def test_missing_main_model_is_named():
    with pytest.raises(ConfigError, match="missing required key 'main_model'"):
        DLRTrainer(load_config(DLRConfig, CONFIG)).setup()


def _run(model_dir, out, *overrides, resume=False):
    argv = ["train", "dlr", "--config", str(CONFIG), *small_run(model_dir, out, *overrides)]
    assert cli_main([*argv, "--resume"] if resume else argv) == 0


def test_resume_continues_exactly_and_main_model_stays_frozen(tiny_model_dir, tmp_path):
    # With the contrastive term (off in the shipped recipe) and the likelihood reward.
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(tiny_model_dir, straight, "loop.steps=4", "contrastive=reward_infonce")
    _run(tiny_model_dir, resumed, "loop.steps=2", "contrastive=reward_infonce")
    _run(tiny_model_dir, resumed, "loop.steps=4", "contrastive=reward_infonce", resume=True)

    a = LatentPlugin.from_pretrained(straight / "plugin")
    b = LatentPlugin.from_pretrained(resumed / "plugin")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    rows_a, rows_b = (
        read_metrics(straight / "metrics.jsonl"),
        read_metrics(resumed / "metrics.jsonl"),
    )
    assert [r["step"] for r in rows_b] == [1, 2, 3, 4]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert {k: v for k, v in ra.items() if k not in TIMING_KEYS} == {
            k: v for k, v in rb.items() if k not in TIMING_KEYS
        }

    # The checkpoint's state is one JSON file: the loop's counters and the data order.
    state = json.loads((resumed / "checkpoint-000004" / "trainer_state.json").read_text())
    assert (state["step"], state["format_version"], state["best_eval"]) == (4, 2, None)
    assert sorted(state["order"]) == list(range(len(state["order"]))) and state["position"] > 0

    # A checkpoint written before the shared skeleton (no format_version) is refused by name.
    del state["format_version"]
    (resumed / "checkpoint-000004" / "trainer_state.json").write_text(json.dumps(state))
    cfg = load_config(DLRConfig, CONFIG, small_run(tiny_model_dir, resumed, "loop.steps=6"))
    with pytest.raises(ConfigError, match=r"checkpoint-000004 holds trainer state format 1, "
                       r"and this latentrl reads format 2; start the run again"):  # fmt: skip
        DLRTrainer(cfg, resume=True).setup()

    # Training changed the plugin between the two checkpoints (the value head always learns).
    halfway = LatentPlugin.from_pretrained(resumed / "checkpoint-000002" / "plugin")
    assert not torch.equal(halfway.value_head[0].weight, a.value_head[0].weight)
    # ... and the run records what it logs every step and the end-of-run artefacts.
    for key in ("reward_mean", "reward_std", "accuracy", "format_rate", "zero_std_groups", "latent_std",
                "clip_fraction", "contrastive_loss", "value_mae", "decodes_saved", "main_tokens_decoded", "step_time",
                "likelihood_reward", "answer_probability", "mixed_outcome_groups", "latent_mean_abs"):  # fmt: skip
        assert key in rows_a[0], key
    assert (straight / "curves.png").stat().st_size > 0
    summary = json.loads((straight / "summary.json").read_text())
    assert 0.0 <= summary["RL-trained plugin"]["accuracy"] <= 1.0


def test_main_model_is_bit_identical_after_training(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    before = load_file(tiny_model_dir / "model.safetensors")
    cfg = load_config(
        DLRConfig, CONFIG, small_run(tiny_model_dir, tmp_path, "loop.steps=2", "warm_start_steps=2")
    )
    trainer = DLRTrainer(cfg)
    trainer.setup()
    trainer.warm_start()
    trainer.train()
    state = trainer.main_model.state_dict()
    for name, tensor in before.items():  # the trainer's copy, bit for bit, against the file
        assert torch.equal(state[name], tensor), name
    assert fingerprint(trainer.main_model) == trainer.main_fingerprint
    assert not any(p.requires_grad for p in trainer.main_model.parameters())
    trainer.cleanup()
    after = load_file(tiny_model_dir / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_warm_start_moves_the_mean_and_resets_the_std(tiny_model_dir, tmp_path):
    cfg = load_config(
        DLRConfig, CONFIG,
        small_run(tiny_model_dir, tmp_path, "warm_start_steps=3", "warm_start_batch_size=4",
                  "warm_start_learning_rate=1e-2"),
    )  # fmt: skip
    trainer = DLRTrainer(cfg)
    trainer.setup()
    encoded = trainer.policy.encode_questions(trainer.eval_rows["question"][:4])
    before = trainer.policy.distribution(*encoded)
    trainer.warm_start()
    after = trainer.policy.distribution(*encoded)
    trainer.cleanup()
    assert not torch.allclose(after.mean, before.mean)
    expected = torch.full_like(after.log_std, cfg.plugin.init_log_std)
    torch.testing.assert_close(after.log_std, expected)


def test_plugin_round_trip_and_main_model_check(tiny_model_dir, tmp_path):
    cfg = load_config(DLRConfig, CONFIG, small_run(tiny_model_dir, tmp_path, "loop.steps=1"))
    trainer = DLRTrainer(cfg)
    trainer.setup()
    plugin = trainer.policy
    plugin.save_pretrained(tmp_path / "saved")
    loaded = LatentPlugin.from_pretrained(tmp_path / "saved", main_model=str(tiny_model_dir))
    ids, mask = plugin.encode_questions(["Question: 1 + 2\nAnswer:", "Question: 3\nAnswer:"])
    with torch.no_grad():
        a, b = plugin.distribution(ids, mask), loaded.distribution(ids, mask)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.log_std, b.log_std)
    with pytest.raises(ValueError, match="was trained for main model"):
        LatentPlugin.from_pretrained(tmp_path / "saved", main_model=str(tmp_path))
    with pytest.raises(ValueError, match="is not a latent plugin: latent_plugin.json is missing"):
        LatentPlugin.from_pretrained(tmp_path)
    trainer.cleanup()


def test_latent_log_prob_is_exact(tiny_model_dir, tmp_path):
    """log pi(z|q) used by the trainer equals torch.distributions.Normal's."""
    from latentrl.losses import gaussian_log_prob

    cfg = load_config(DLRConfig, CONFIG, small_run(tiny_model_dir, tmp_path, "loop.steps=1"))
    trainer = DLRTrainer(cfg)
    trainer.setup()
    plugin = trainer.policy
    with torch.no_grad():
        dist = plugin.distribution(*plugin.encode_questions(["Question: 4 + 5\nAnswer:"]))
        z = dist.mean + dist.log_std.exp() * torch.randn(dist.mean.shape)
        expected = torch.distributions.Normal(dist.mean, dist.log_std.exp()).log_prob(z).sum()
    assert torch.allclose(gaussian_log_prob(z, dist.mean, dist.log_std), expected[None], atol=1e-4)
    trainer.cleanup()


def test_gpu_config_builds_with_tiny_stand_ins(tiny_model_dir, tmp_path):
    """configs/dlr_gsm8k_qwen.yaml is valid: with tiny stand-ins for the Qwen models it
    sets up a LoRA assistant, warm-starts, trains a step and saves a PEFT-style plugin."""
    from peft import PeftModel

    from tests.conftest import shared_data_dir

    gsm8k = shared_data_dir() / "gsm8k"
    if not gsm8k.is_dir():
        pytest.skip(f"GSM8K files not found at {gsm8k}")
    cfg = load_config(DLRConfig, REPO_ROOT / "configs" / "dlr_gsm8k_qwen.yaml", [
        f"main_model={tiny_model_dir}", f"assistant_model={tiny_model_dir}", f"output_dir={tmp_path}",
        f"task.options.data_dir={gsm8k}", "rollout.backend=hf", "rollout.dtype=float32",
        "loop.mixed_precision=none", "loop.report_to=[]", "loop.steps=1", "questions_per_step=2",
        "eval_problems=2", "decode_max_tokens=4", "warm_start_steps=1", "warm_start_batch_size=2",
    ])  # fmt: skip
    trainer = DLRTrainer(cfg)
    trainer.setup()
    assistant = trainer.policy.assistant
    assert isinstance(assistant, PeftModel)
    trainable = {n for n, p in assistant.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    trainer.warm_start()
    trainer.train()
    trainer.cleanup()
    loaded = LatentPlugin.from_pretrained(tmp_path / "plugin", main_model=str(tiny_model_dir))
    assert isinstance(loaded.assistant, PeftModel)
    assert (tmp_path / "plugin" / "assistant" / "adapter_config.json").is_file()


def test_fingerprint_sees_a_one_element_change():
    layer = torch.nn.Linear(3, 2).to(torch.bfloat16)
    before = fingerprint(layer)
    with torch.no_grad():
        layer.weight[0, 0] += 1
    after = fingerprint(layer)
    assert after["weight"] != before["weight"] and after["bias"] == before["bias"]


def test_gradient_accumulation_matches_one_batch(tiny_model_dir, tmp_path):
    """Two micro-batches accumulated by accelerate train as one batch of both (without the
    contrastive term, whose negatives would differ; the whole assistant trains here)."""
    whole, accumulated = tmp_path / "whole", tmp_path / "accumulated"
    common = ("loop.steps=2", "contrastive=none", "plugin.lora=false")
    _run(tiny_model_dir, whole, *common)
    _run(tiny_model_dir, accumulated, *common, "loop.gradient_accumulation_steps=2")
    a = LatentPlugin.from_pretrained(whole / "plugin").state_dict()
    b = LatentPlugin.from_pretrained(accumulated / "plugin").state_dict()
    # Adam divides each gradient by its own running size, so an element whose gradient is
    # float noise can move by up to the learning rate a step either way (seed 2: 1 element
    # of the 48,896 embeddings, by 7.8e-5); every other element matches to float precision.
    lr = load_config(DLRConfig, CONFIG).loop.learning_rate
    for name, tensor in a.items():
        off = ~torch.isclose(b[name], tensor, rtol=1e-3, atol=1e-5)
        assert off.sum() <= tensor.numel() // 10_000, (name, int(off.sum()))
        torch.testing.assert_close(b[name], tensor, rtol=0, atol=2 * lr, msg=name)
    rows_a, rows_b = (
        read_metrics(whole / "metrics.jsonl"),
        read_metrics(accumulated / "metrics.jsonl"),
    )
    # Step 1 starts from the same weights: its numbers match to float precision. Step 2
    # starts from weights that may differ by such an element (seed 2: grad norm 1.5e-4 off).
    for ra, rb, rel in zip(rows_a, rows_b, (1e-5, 1e-3), strict=True):
        for key in ("reward_mean", "accuracy", "value_mae", "latent_std", "grad_norm"):
            assert rb[key] == pytest.approx(ra[key], rel=rel, abs=1e-6), (ra["step"], key)


def test_gradient_accumulation_must_divide_the_batch(tiny_model_dir, tmp_path):
    cfg = load_config(
        DLRConfig, CONFIG, small_run(tiny_model_dir, tmp_path, "loop.gradient_accumulation_steps=3")
    )
    message = "questions_per_step: 4 questions can't be split evenly over 1 processes x 3"
    with pytest.raises(ConfigError, match=message):
        DLRTrainer(cfg).setup()


def test_likelihood_reward_is_the_frozen_models_gold_probability(tiny_model_dir, tmp_path):
    """Total reward = dual reward + weight * (gold-solution probability at the sampled
    latent - at the mean latent), each probability checked against a one-sequence loop."""
    weight = 0.5
    cfg = load_config(
        DLRConfig, CONFIG, small_run(tiny_model_dir, tmp_path, f"likelihood_weight={weight}")
    )
    trainer = DLRTrainer(cfg)
    trainer.setup()
    rows = trainer.sampler.draw(cfg.questions_per_step)
    rollout = trainer._rollout(rows)
    policy, main, tokenizer = trainer.policy, trainer.main_model, trainer.tokenizer
    with torch.no_grad():
        mean = policy.distribution(rollout.input_ids, rollout.attention_mask).mean
        latents = policy.projector(torch.cat([rollout.z, mean[:, None]], dim=1))
        for q, row in enumerate(rows):
            target = tokenizer(trainer.task.target(row), add_special_tokens=False)["input_ids"]
            target = target + [tokenizer.eos_token_id]
            for k, vectors in enumerate(latents[q]):
                prompt = policy.inject(trainer.main_embeddings, tokenizer, row["prompt"], vectors)
                inputs = torch.cat([prompt, trainer.main_embeddings(torch.tensor(target))])
                probabilities = main(inputs_embeds=inputs[None]).logits[0].softmax(-1)
                start = len(prompt) - 1
                picked = [probabilities[start + i, t].item() for i, t in enumerate(target)]
                expected = sum(picked) / len(picked)
                assert rollout.answer_probability[q, k].item() == pytest.approx(expected, abs=1e-5)
    trainer.cleanup()
    scores = rollout.answer_probability
    dual = cfg.correctness_weight * rollout.correct + cfg.format_weight * rollout.formatted
    dense = weight * (scores[:, :-1] - scores[:, -1:])
    torch.testing.assert_close(rollout.rewards, dual + dense)
    assert (dense != 0).all()  # no sample ties its question's mean latent


def test_a_run_with_the_likelihood_reward_logs_it(tiny_model_dir, tmp_path):
    cfg = load_config(
        DLRConfig,
        CONFIG,
        small_run(tiny_model_dir, tmp_path, "loop.steps=2", "likelihood_weight=1.0"),
    )
    trainer = DLRTrainer(cfg)
    trainer.setup()
    trainer.train()
    trainer.cleanup()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert 0.0 < row["answer_probability"] < 1.0
        assert abs(row["likelihood_reward"]) < 1.0
        assert row["zero_std_groups"] == 0.0  # the dense reward ties no group
        assert 0.0 <= row["mixed_outcome_groups"] <= 1.0


def test_a_shared_engine_is_used_and_left_open(tiny_model_dir, tmp_path, monkeypatch):
    """The demo passes one engine to every seed's trainer: each decodes with it and none
    closes it (the caller does)."""
    from latentrl.config import RolloutConfig
    from latentrl.rollout import make_engine

    engine = make_engine(tiny_model_dir, RolloutConfig(backend="hf"))
    closed = []
    monkeypatch.setattr(engine, "close", lambda: closed.append(True))
    cfg = load_config(DLRConfig, CONFIG, small_run(tiny_model_dir, tmp_path, "loop.steps=1"))
    trainer = DLRTrainer(cfg, engine=engine)
    trainer.setup()
    trainer.train()
    trainer.cleanup()
    assert trainer.engine is engine and closed == []
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["main_tokens_decoded"] > 0


def test_a_step_keeps_every_tensor_on_the_accelerators_device(tiny_model_dir, tmp_path):
    """The models, the rollout and the update's numbers all live on ``accelerator.device``
    (a GPU when there is one; the CPU here, where this test checks the same code paths):
    a step mixing devices would fail on CUDA."""
    cfg = load_config(DLRConfig, CONFIG, small_run(
        tiny_model_dir, tmp_path, "loop.steps=1", "kl_coef=0.1", "likelihood_weight=1.0",
        "contrastive=reward_infonce", "warm_start_steps=1", "warm_start_batch_size=2",
    ))  # fmt: skip
    trainer = DLRTrainer(cfg)
    trainer.setup()
    device = trainer.accelerator.device
    trainer.warm_start()
    rollout = trainer._rollout(trainer.sampler.draw(cfg.questions_per_step))
    stats = trainer._update(rollout)
    tensors = {name: value for name, value in rollout._asdict().items() if torch.is_tensor(value)}
    assert set(tensors) == {
        "input_ids", "attention_mask", "z", "eps", "logp_old", "rewards", "correct",
        "formatted", "answer_probability",
    }  # fmt: skip
    for name, tensor in tensors.items():
        assert tensor.device == device, name
    for module in (trainer.main_model, trainer.reference, trainer.policy):
        assert {p.device for p in module.parameters()} == {device}
    assert {"loss", "grad_norm", "contrastive_loss"} <= set(stats)
    trainer.cleanup()
