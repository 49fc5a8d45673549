"""LQ-Former, token selection and CoCoVa's losses against their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from latentrl.config import LQFormerSettings
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
    LQFormerBlock,
    grid_position_codes,
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


def _tokens_matching(counts: list[int], tokens: int = 16) -> torch.Tensor:
    """[len(counts), tokens, 8]: in row b the first counts[b] tokens carry e0 - e1 (a match),
    the others e2 - e3; both zero-mean with one variance, so LayerNorm doubles them alike."""
    visual = torch.zeros(len(counts), tokens, 8)
    for b, count in enumerate(counts):
        visual[b, :count, 0], visual[b, :count, 1] = 1.0, -1.0
        visual[b, count:, 2], visual[b, count:, 3] = 1.0, -1.0
    return visual


@pytest.mark.parametrize("sink", [True, False])
def test_null_key_takes_the_attention_when_no_visual_token_matches(sink):
    torch.manual_seed(0)
    block = LQFormerBlock(width=8, num_heads=1, attention_sink=sink)
    attention = block.cross_attn
    with torch.no_grad():
        # Every query asks for feature 0 (score 20 * 2 / sqrt(8) on a match, 0 elsewhere) ...
        attention.in_proj_weight.zero_()
        attention.in_proj_bias.zero_()
        attention.in_proj_bias[0] = 20.0
        attention.in_proj_weight[8:16] = torch.eye(8)
        if sink:  # ... and the null key scores as a match does.
            attention.bias_k.zero_()
            attention.bias_k[..., 0] = 2.0
    counts = [0, 1, 2, 3]
    z, text = torch.randn(4, 3, 8), torch.randn(4, 2, 8)
    weights = block(z, text, torch.zeros(4, 2, dtype=torch.bool), _tokens_matching(counts))[1]
    on_visual = weights.sum(dim=-1)  # [4, 3]: per question and query
    if not sink:  # softmax over the tokens alone cannot say "none", nor count
        assert torch.allclose(on_visual, torch.ones(4, 3))
        assert torch.allclose(weights[0], torch.full((3, 16), 1 / 16))
        return
    assert on_visual[0].max().item() < 1e-4  # nothing matches: the null takes it all
    for b, count in enumerate(counts[1:], 1):  # n matches: n/(n+1), a count
        assert torch.allclose(on_visual[b], torch.full((3,), count / (count + 1)), atol=1e-4)
        assert torch.allclose(
            weights[b, :, :count], torch.full((3, count), 1 / (count + 1)), atol=1e-4
        )


def test_position_codes_encode_row_and_column_of_a_square_grid():
    codes = grid_position_codes(16, 8)
    assert codes.shape == (16, 8)
    rows, columns = codes[:, :4], codes[:, 4:]
    for i in range(16):
        for j in range(16):
            assert torch.equal(rows[i], rows[j]) == (i // 4 == j // 4)
            assert torch.equal(columns[i], columns[j]) == (i % 4 == j % 4)
    with pytest.raises(ValueError, match="15 visual tokens are not a square grid"):
        grid_position_codes(15, 8)


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
