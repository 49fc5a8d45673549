"""`latentrl eval`: numbers that equal a hand check, strict vs flexible, maj@n, plugins."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from latentrl.cli import main as cli_main
from latentrl.config import DLRConfig, load_config
from latentrl.eval.math import majority_verdicts
from latentrl.trainers.dlr import DLRTrainer
from tests.conftest import REPO_ROOT, TEST_TASK_OPTIONS

TASK_OPTIONS = [f"task.options.{k}={v}" for k, v in TEST_TASK_OPTIONS.items()]


def run_eval(tmp_path, model_dir, *extra):
    argv = ["eval", "--model", str(model_dir), "--task", "arith", "--limit", "20",
            "--output-dir", str(tmp_path), *TASK_OPTIONS, "rollout.backend=hf", "max_tokens=48", *extra]  # fmt: skip
    assert cli_main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    return summary, samples


def by_hand(completion: str, gold: str) -> tuple[bool, bool]:
    """Strict: a final `#### N` line; flexible: the last number anywhere."""
    strict = re.search(r"####\s*(-?\d+)\s*$", completion.strip())
    numbers = re.findall(r"-?\d+", completion)
    return (strict is not None and strict.group(1) == gold, bool(numbers) and numbers[-1] == gold)


def test_greedy_eval_equals_a_hand_check(tiny_model_dir, tmp_path, capsys):
    summary, samples = run_eval(tmp_path, tiny_model_dir)
    assert len(samples) == summary["num_problems"] == 20
    checks = [by_hand(s["completion"], s["gold"]) for s in samples]
    assert summary["strict_accuracy"] == pytest.approx(sum(s for s, _ in checks) / 20)
    assert summary["flexible_accuracy"] == pytest.approx(sum(f for _, f in checks) / 20)
    assert summary["majority_accuracy"] == summary["flexible_accuracy"]  # n = 1
    assert [s["strict_correct"] for s in samples] == [float(s) for s, _ in checks]
    assert summary["unjudged"] == 0 and summary["format_rate"] > 0.5
    printed = capsys.readouterr().out
    assert "strict/flexible gap" in printed and "maj@1" in printed


def test_strict_and_flexible_differ_when_the_format_is_missing():
    from latentrl.rewards import CorrectnessReward

    texts, gold = ["7 + 4 = 11, so 11", "7 + 4 = 11\n#### 11"], ["11", "11"]
    assert CorrectnessReward(extraction_order=("hash",))(None, texts, answer=gold) == [0.0, 1.0]
    assert CorrectnessReward()(None, texts, answer=gold) == [1.0, 1.0]


def test_sampled_eval_reports_maj_at_n(tiny_model_dir, tmp_path):
    summary, samples = run_eval(
        tmp_path, tiny_model_dir, "--n", "3", "--temperature", "1.0", "--seed", "5"
    )
    assert len(samples) == 60 and summary["samples_per_problem"] == 3
    expected = []
    for problem in range(20):
        answers = [
            s for s in samples if s["problem"] == problem and s["flexible_answer"] is not None
        ]
        if not answers:
            expected.append(0.0)
            continue
        top = Counter(s["flexible_answer"] for s in answers).most_common(1)[0][0]
        expected.append(next(s["flexible_correct"] for s in answers if s["flexible_answer"] == top))
    assert summary["majority_accuracy"] == pytest.approx(sum(expected) / 20)
    # Same seed, same numbers.
    again, _ = run_eval(
        tmp_path / "again", tiny_model_dir, "--n", "3", "--temperature", "1.0", "--seed", "5"
    )
    assert again["flexible_accuracy"] == summary["flexible_accuracy"]


def test_majority_vote_tie_goes_to_the_first_answer():
    samples = [
        {"problem": 0, "flexible_answer": a, "flexible_correct": c}
        for a, c in [("5", 1.0), ("6", 0.0)]
    ]
    assert majority_verdicts(samples, 2) == [1.0, 0.0]  # problem 1 has no answer at all


def test_plugin_eval_matches_the_trainer(tiny_model_dir, tmp_path):
    cfg = load_config(DLRConfig, REPO_ROOT / "configs" / "dlr_arith_tiny.yaml", [
        f"main_model={tiny_model_dir}", f"output_dir={tmp_path / 'run'}", *TASK_OPTIONS,
        "task.options.direct=false", "eval_problems=20", "decode_max_tokens=48", "rollout.backend=hf",
    ])  # fmt: skip
    trainer = DLRTrainer(cfg)
    trainer.setup()
    expected = trainer.evaluate(with_plugin=True)
    trainer.policy.save_pretrained(tmp_path / "plugin")
    trainer.cleanup()
    summary, _ = run_eval(tmp_path / "eval", tiny_model_dir, "--plugin", str(tmp_path / "plugin"))
    assert summary["flexible_accuracy"] == pytest.approx(expected["accuracy"])
    assert summary["format_rate"] == pytest.approx(expected["format_rate"])


def test_adapter_is_merged_for_decoding(tiny_model_dir, tmp_path):
    """A LoRA adapter with zero update decodes like the base model; a trained one differs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base, _ = run_eval(tmp_path / "base", tiny_model_dir)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules="all-linear"),
    )
    model.save_pretrained(tmp_path / "zero")
    same, _ = run_eval(tmp_path / "same", tiny_model_dir, "--adapter", str(tmp_path / "zero"))
    assert same["flexible_accuracy"] == base["flexible_accuracy"]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "noisy")
    _, noisy = run_eval(
        tmp_path / "noisy_eval", tiny_model_dir, "--adapter", str(tmp_path / "noisy")
    )
    _, base_samples = run_eval(tmp_path / "base2", tiny_model_dir)
    assert [s["completion"] for s in noisy] != [s["completion"] for s in base_samples]
