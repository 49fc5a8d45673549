"""LQ-Former, token selection and CoCoVa's losses against their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from latentrl.losses.cocova import (
    ConditionalDenoiser,
    CrossModalContrast,
    NoiseSchedule,
    diffusion_loss,
    symmetric_infonce,
)
from latentrl.models.qformer import (
    CoCoVaPlugin,
    CoCoVaPluginConfig,
    LQFormer,
    LQFormerSettings,
    num_kept,
    select_tokens,
)


def _inputs(batch=3, tokens=16, width=32, text_len=5):
    generator = torch.Generator().manual_seed(0)
    visual = torch.randn(batch, tokens, width, generator=generator)
    text = torch.randn(batch, text_len, width, generator=generator)
    pad = torch.zeros(batch, text_len, dtype=torch.bool)
    pad[0, 3:] = True
    return visual, text, pad


def test_closed_gate_leaves_the_initial_queries_unchanged():
    torch.manual_seed(0)
    lqformer = LQFormer(LQFormerSettings(width=32, num_heads=4, iterations=3, num_queries=6))
    visual, text, pad = _inputs()
    thoughts = lqformer(visual, text, pad)
    assert lqformer.gate.item() == 0.0
    expected = lqformer.queries.expand(3, -1, -1)
    assert torch.equal(thoughts.latents, expected)
    assert thoughts.iterations.tolist() == [3, 3, 3]
    assert thoughts.update_sizes == [0.0, 0.0, 0.0]
    # ... and an open gate changes them, by tanh(alpha) times the block's update.
    with torch.no_grad():
        lqformer.gate.fill_(0.5)
    opened = lqformer(visual, text, pad)
    assert not torch.allclose(opened.latents, expected)
    first_update = math.tanh(0.5) * lqformer.block(expected, text, pad, visual)[0]
    assert opened.update_sizes[0] == pytest.approx(
        (first_update.norm(dim=-1) / expected.norm(dim=-1)).mean().item(), rel=1e-5
    )


def test_the_gate_gets_a_gradient_while_closed():
    lqformer = LQFormer(LQFormerSettings(width=32, num_heads=4, iterations=2))
    lqformer(*_inputs()).latents.pow(2).sum().backward()
    assert lqformer.gate.grad is not None and lqformer.gate.grad.abs().item() > 0


@pytest.mark.parametrize(
    ("tokens", "fraction", "kept"), [(16, 0.75, 12), (16, 0.5, 8), (10, 0.25, 2), (3, 0.1, 1)]
)
def test_token_selection_keeps_the_requested_fraction_of_highest_attention_tokens(
    tokens, fraction, kept
):
    generator = torch.Generator().manual_seed(tokens)
    features = torch.randn(4, tokens, 8, generator=generator)
    scores = torch.rand(4, tokens, generator=generator)
    selected, indices = select_tokens(features, scores, fraction)
    assert num_kept(tokens, fraction) == kept
    assert selected.shape == (4, kept, 8) and indices.shape == (4, kept)
    for b in range(4):
        best = sorted(range(tokens), key=lambda i: -scores[b, i].item())[:kept]
        assert indices[b].tolist() == best
        assert torch.equal(selected[b], features[b, best])


def test_selection_shrinks_the_tokens_step_by_step_and_follows_attention():
    torch.manual_seed(0)
    settings = LQFormerSettings(width=32, num_heads=4, iterations=3, keep_fraction=0.5)
    lqformer = LQFormer(settings)
    thoughts = lqformer(*_inputs(tokens=16))
    assert [k.shape[1] for k in thoughts.kept] == [8, 4]
    # Later selections are subsets of earlier ones (indices into the original tokens).
    for b in range(3):
        assert set(thoughts.kept[1][b].tolist()) <= set(thoughts.kept[0][b].tolist())


def test_early_stop_counts_the_iterations_used():
    torch.manual_seed(0)
    lqformer = LQFormer(
        LQFormerSettings(width=32, num_heads=4, iterations=4, early_stop=1e-3)
    ).eval()
    inputs = _inputs()
    # Closed gate: the first update is zero, so every question stops after one step.
    assert lqformer(*inputs).iterations.tolist() == [1, 1, 1]
    with torch.no_grad():
        lqformer.gate.fill_(3.0)
    assert lqformer(*inputs).iterations.tolist() == [4, 4, 4]
    assert lqformer.train()(*inputs).iterations.tolist() == [4, 4, 4]  # never early in training


def _naive_infonce(a, b, scale):
    a = [x / x.norm() for x in a]
    b = [x / x.norm() for x in b]
    n = len(a)
    total = 0.0
    for i in range(n):
        row = [math.exp(scale * float(a[i] @ b[j])) for j in range(n)]
        col = [math.exp(scale * float(a[j] @ b[i])) for j in range(n)]
        total += -math.log(row[i] / sum(row)) - math.log(col[i] / sum(col))
    return total / (2 * n)


def test_symmetric_infonce_matches_a_naive_loop():
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    log_scale = torch.tensor(math.log(3.0))
    assert symmetric_infonce(a, b, log_scale).item() == pytest.approx(
        _naive_infonce(a, b, 3.0), rel=1e-5
    )


def test_cross_modal_contrast_sums_image_and_text_terms_with_a_learnable_temperature():
    torch.manual_seed(0)
    contrast = CrossModalContrast(latent_dim=8, image_dim=6, text_dim=4, dim=5)
    z, image, text = torch.randn(7, 8), torch.randn(7, 6), torch.randn(7, 4)
    loss, stats = contrast(z, image, text)
    scale = contrast.logit_scale.exp().item()
    head = contrast.latent_head(z).detach()
    expected = _naive_infonce(head, contrast.image_head(image).detach(), scale) + _naive_infonce(
        head, contrast.text_head(text).detach(), scale
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert stats["temperature"] == pytest.approx(0.07, rel=1e-5)
    loss.backward()
    assert contrast.logit_scale.grad is not None


def test_diffusion_loss_is_zero_for_a_denoiser_that_predicts_the_true_noise():
    schedule = NoiseSchedule(1000)
    x0 = torch.randn(5, 16, 8, generator=torch.Generator().manual_seed(2))

    def oracle(x_t, t, condition):  # inverts x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
        abar = schedule.alpha_bar[t].view(-1, 1, 1)
        return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()

    generator = torch.Generator().manual_seed(3)
    assert diffusion_loss(oracle, x0, torch.zeros(5, 2, 4), schedule, generator).item() < 1e-8
    # Predicting zero scores the noise's variance (zero-mean, unit-variance targets).
    zero = diffusion_loss(lambda x_t, t, c: torch.zeros_like(x_t), x0, None, schedule, generator)
    assert zero.item() == pytest.approx(1.0, abs=0.1)


def test_noise_schedule_is_ddpm_linear():
    schedule = NoiseSchedule(1000, 1e-4, 0.02)
    assert schedule.alpha_bar[0].item() == pytest.approx(1 - 1e-4)
    assert schedule.alpha_bar[-1].item() == pytest.approx(4.04e-5, rel=0.05)
    assert torch.all(schedule.alpha_bar[1:] < schedule.alpha_bar[:-1])


def test_denoiser_output_depends_on_the_condition():
    torch.manual_seed(0)
    denoiser = ConditionalDenoiser(visual_dim=8, condition_dim=6, width=16, num_heads=2)
    x, t = torch.randn(2, 4, 8), torch.tensor([10, 500])
    assert not torch.allclose(
        denoiser(x, t, torch.randn(2, 3, 6)), denoiser(x, t, torch.randn(2, 3, 6))
    )


def test_plugin_round_trips_through_its_folder(tmp_path):
    torch.manual_seed(0)
    config = CoCoVaPluginConfig(
        language_model="lm", vision_encoder="vit", lm_hidden_size=16, visual_dim=12, target_rms=0.5,
        settings=LQFormerSettings(width=32, num_heads=4, num_queries=4),
    )  # fmt: skip
    plugin = CoCoVaPlugin(config).eval()
    with torch.no_grad():
        plugin.lqformer.gate.fill_(0.3)
    visual, text = torch.randn(2, 16, 12), torch.randn(2, 5, 16)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    out = plugin(visual, text, pad)
    assert out.embeds.shape == (2, 4, 16)
    assert out.embeds.pow(2).mean(-1).sqrt().allclose(torch.tensor(0.5), atol=1e-3)
    plugin.save_pretrained(tmp_path / "plugin")
    loaded = CoCoVaPlugin.from_pretrained(tmp_path / "plugin")
    assert torch.equal(loaded(visual, text, pad).embeds, out.embeds)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a CoCoVa plugin folder"):
        CoCoVaPlugin.from_pretrained(tmp_path / "empty")
