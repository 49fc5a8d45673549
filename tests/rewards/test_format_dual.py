"""FormatReward, DualReward and the registry."""

from __future__ import annotations

import pytest

from latentrl.rewards import (
    REWARDS,
    CorrectnessReward,
    DualReward,
    FormatReward,
    format_reward,
    get_reward,
)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("9 * 2 = 18\n#### 18", 1.0),
        ("#### 18\n\n  ", 1.0),
        ("#### 1,234.50.", 1.0),
        ("#### -$5", 1.0),
        ("####18", 1.0),
        ("#### 18\nThat is all.", 0.0),  # something substantial after it
        ("#### eighteen", 0.0),
        ("#### 18 dollars", 0.0),
        ("The answer is 18", 0.0),
        ("x #### 18", 0.0),  # not on its own line
        ("", 0.0),
    ],
)
def test_hash_style(completion, expected):
    assert FormatReward()(None, [completion]) == [expected]
    assert format_reward(None, [completion]) == [expected]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (r"so \boxed{18}", 1.0),
        (r"\boxed{\frac{1}{2}} is it", 1.0),
        (r"\boxed{}", 0.0),
        (r"\boxed{ }", 0.0),
        (r"\boxed{18", 0.0),
        ("#### 18", 0.0),
    ],
)
def test_boxed_style(completion, expected):
    assert FormatReward(style="boxed")(None, [completion]) == [expected]


def test_custom_pattern_conversational_and_kwargs():
    reward = FormatReward(pattern=r"(?s)<think>.*</think>\s*\S")
    completions = [
        [{"role": "assistant", "content": "<think>hmm</think> 18"}],
        [{"role": "assistant", "content": "18"}],
    ]
    assert reward(
        None, completions, answer=["18", "18"], completion_ids=[[1], [2]], trainer_state=None
    ) == [
        1.0,
        0.0,
    ]
    assert reward.__name__ == "format"


def test_format_validation():
    with pytest.raises(ValueError) as info:
        FormatReward(style="xml")
    assert str(info.value) == "FormatReward.style must be one of ['hash', 'boxed'], got 'xml'"
    with pytest.raises(
        ValueError, match=r"FormatReward.pattern '\(' is not a valid regular expression"
    ):
        FormatReward(pattern="(")


def test_dual_weights_and_none_propagation():
    reward = DualReward(correctness_weight=2.0, format_weight=0.5)
    completions = ["7 + 11 = 18\n#### 18", "The answer is 18.", "#### 17", "#### 18", r"\boxed{x}"]
    golds = ["18", "18", "18", None, "x"]
    assert reward(None, completions, answer=golds) == [2.5, 2.0, 0.5, None, 2.0]
    assert reward.__name__ == "dual"
    assert reward.correctness.stats["unparseable_gold"] == 1
    # Zero weights are allowed and switch a term off.
    assert DualReward(format_weight=0)(None, ["#### 18"], answer=["18"]) == [1.0]


def test_dual_format_none_also_gives_none():
    def unsure_format(prompts, completions, **kwargs):
        return [None for _ in completions]

    reward = DualReward(format=unsure_format)
    assert reward(None, ["#### 18"], answer=["18"]) == [None]


def test_dual_parts_from_options():
    reward = DualReward(format={"style": "boxed"}, correctness={"timeout_s": 2.0})
    assert isinstance(reward.format, FormatReward) and reward.format.style == "boxed"
    assert isinstance(reward.correctness, CorrectnessReward) and reward.correctness.timeout_s == 2.0
    assert reward(None, [r"\boxed{18}", "#### 18"], answer=["18", "18"]) == [1.2, 1.0]
    with reward:
        pass  # closes the correctness pool (none started here)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"correctness_weight": -1.0}, "DualReward.correctness_weight must be >= 0, got -1.0"),
        ({"format_weight": -0.2}, "DualReward.format_weight must be >= 0, got -0.2"),
        (
            {"format_weight": float("nan")},
            "DualReward.format_weight must be a finite number, got nan",
        ),
        (
            {"correctness_weight": "1"},
            "DualReward.correctness_weight must be a finite number, got '1'",
        ),
        ({"format": 3}, "DualReward.format must be a reward function or a dict of options, got 3"),
    ],
)
def test_dual_validation(options, message):
    with pytest.raises(ValueError) as info:
        DualReward(**options)
    assert str(info.value) == message


def test_dual_rejects_wrong_length_from_a_part():
    reward = DualReward(format=lambda prompts, completions, **kw: [1.0])
    with pytest.raises(ValueError) as info:
        reward(None, ["#### 1", "#### 2"], answer=["1", "2"])
    assert str(info.value) == "DualReward: the format reward returned 1 scores for 2 completions"


def test_registry():
    assert sorted(REWARDS) == ["correctness", "dual", "format"]
    reward = get_reward("correctness", timeout_s=1.0, gold_column="solution")
    assert isinstance(reward, CorrectnessReward)
    assert (reward.timeout_s, reward.gold_column) == (1.0, "solution")
    assert get_reward("format", style="boxed")(None, [r"\boxed{1}"]) == [1.0]
    assert get_reward("dual", format_weight=0.5)(None, ["#### 18"], answer=["18"]) == [1.5]
    assert get_reward("correctness") is not get_reward("correctness")  # fresh instances
    with pytest.raises(ValueError) as info:
        get_reward("accuracy")
    assert (
        str(info.value)
        == "unknown reward 'accuracy'; known rewards: ['correctness', 'dual', 'format']"
    )
    with pytest.raises(ValueError) as info:
        get_reward("format", style="boxed", weight=2)
    assert (
        str(info.value)
        == "unknown option(s) ['weight'] for reward 'format'; known options: ['pattern', 'style']"
    )
