"""`latentrl inspect --plugin` on a CoCoVa plugin: attention maps that add up, kept patches,
answers, and the picture."""

from __future__ import annotations

import json

import pytest
import torch

from latentrl.cli import main
from latentrl.models.qformer import CoCoVaPlugin
from tests.trainers.test_cocova import run_args


@pytest.fixture(scope="module")
def cocova_run(tiny_vqa_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("cocova-run")
    assert main(run_args(tiny_vqa_models, out, "loop.steps=3")) == 0
    return out


def test_attention_maps_cover_the_patches_each_step_sees(cocova_run):
    plugin = CoCoVaPlugin.from_pretrained(cocova_run / "plugin")
    settings = plugin.config.settings
    visual = torch.randn(2, 16, plugin.config.visual_dim)
    text = torch.randn(2, 5, plugin.config.lm_hidden_size)
    out = plugin(visual, text, torch.zeros(2, 5, dtype=torch.bool))
    assert len(out.attention) == settings.iterations
    first, second = out.attention[0], out.attention[1]
    assert first.shape == (2, 16) and (first > 0).all()  # step 1 sees every patch
    # step 2 sees only the patches step 1 kept
    seen = torch.zeros(2, 16, dtype=torch.bool).scatter(1, out.kept[0], True)
    assert (second[~seen] == 0).all() and (second[seen] > 0).all()
    # with the attention sink a query's attention sums to at most 1
    assert (first.sum(dim=1) <= 1 + 1e-5).all()


def test_inspect_writes_the_attention_picture(cocova_run, tmp_path, capsys):
    out = tmp_path / "inspect"
    argv = ["inspect", "--plugin", str(cocova_run / "plugin"), "--limit", "3",
            "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "answered correctly" in capsys.readouterr().out
    report = json.loads((out / "inspect.json").read_text())
    assert report["task"]["name"] == "shapes_vqa"
    assert len(report["images"]) == 3
    image = report["images"][0]
    assert len(image["attention"]) == len(report["top_decile_attention"])
    assert {"question", "answer", "gold", "correct"} <= set(image)
    assert (out / "attention.png").read_bytes().startswith(b"\x89PNG")
