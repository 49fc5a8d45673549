"""Property tests: a number written in any supported way is recovered exactly and scored right."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentrl.rewards import CorrectnessReward, extract_answer, normalize_number

WORDS = [
    "Janet",
    "has",
    "eggs",
    "so",
    "then",
    "we",
    "add",
    "them",
    "each",
    "day",
    "total",
    "of",
    "and",
]
UNITS = [" dollars", " cm", " km/h", " apples", " m²"]


@st.composite
def written_numbers(draw) -> tuple[Fraction, str, bool]:
    """(value, how it is written, whether it is written in LaTeX)."""
    negative = draw(st.booleans())
    kind = draw(st.sampled_from(["int", "decimal", "fraction"]))
    latex = False
    if kind == "int":
        n = draw(st.integers(0, 10**15) | st.integers(0, 100))
        value = Fraction(n)
        digits = draw(st.sampled_from([str(n), f"{n:,}", f"{n}." + "0" * draw(st.integers(1, 3))]))
    elif kind == "decimal":
        whole = draw(st.integers(0, 10**9))
        decimals = draw(st.text("0123456789", min_size=1, max_size=6))
        value = whole + Fraction(int(decimals), 10 ** len(decimals))
        digits = f"{draw(st.sampled_from([str(whole), f'{whole:,}']))}.{decimals}"
    else:
        num, den = draw(st.integers(0, 10**6)), draw(st.integers(1, 10**6))
        value = Fraction(num, den)
        style = draw(st.sampled_from(["slash", "frac", "dfrac", "tfrac"]))
        latex = style != "slash"
        digits = f"{num}/{den}" if style == "slash" else f"\\{style}{{{num}}}{{{den}}}"
        if negative and latex and draw(st.booleans()):
            digits, negative = f"\\{style}{{-{num}}}{{{den}}}", False
            value = -value
    if negative:
        value = -value
    money = kind != "fraction" and draw(st.booleans())
    dollar = draw(st.sampled_from(["$", "\\$"])) if money else ""
    sign = "-" if negative else ""
    written = draw(st.sampled_from([f"{sign}{dollar}{digits}", f"{dollar}{sign}{digits}"]))
    if not money and kind != "fraction" and draw(st.booleans()):
        written += "%"  # GSM8K writes 50% as 50
    elif draw(st.booleans()):
        written += draw(st.sampled_from(UNITS))
    return value, written, latex


@st.composite
def surrounding_text(draw) -> str:
    words = draw(st.lists(st.sampled_from(WORDS), max_size=8))
    numbers = draw(st.lists(st.integers(0, 10**6).map(str), max_size=3))
    return " ".join(words + numbers + ["."])


def wrap(fmt: str, prefix: str, written: str) -> str:
    if fmt == "hash":
        return f"{prefix}\n#### {written}"
    if fmt == "boxed":
        return f"{prefix} so the result is $\\boxed{{{written}}}$."
    if fmt == "answer_is":
        return f"{prefix} The final answer is: {written}."
    if fmt == "a_colon":
        return f"{prefix}\nA: {written}"
    return f"{prefix} so we get {written} in total."  # last_number


FORMATS = ["hash", "boxed", "answer_is", "a_colon", "last_number"]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(number=written_numbers(), prefix=surrounding_text(), fmt=st.sampled_from(FORMATS))
def test_extraction_recovers_the_exact_value(number, prefix, fmt):
    value, written, _ = number
    text = wrap(fmt, prefix, written)
    for order in ([fmt], None):
        answer = extract_answer(text, order=order) if order else extract_answer(text)
        assert answer is not None, text
        assert Fraction(answer) == value, text
        assert normalize_number(answer) == answer  # already canonical
    assert normalize_number(written) == extract_answer(text)


@SETTINGS
@given(
    number=written_numbers(),
    prefix=surrounding_text(),
    fmt=st.sampled_from(FORMATS),
    delta=st.fractions(min_value=-1000, max_value=1000).filter(bool),
    gold_style=st.sampled_from(["canonical", "latex", "decimal-zeros"]),
)
def test_correctness_scores_right_and_wrong(number, prefix, fmt, delta, gold_style):
    value, written, _ = number
    text = wrap(fmt, prefix, written)
    reward = CorrectnessReward()
    result = reward(
        None,
        [text, text],
        answer=[gold_text(value, gold_style), gold_text(value + delta, gold_style)],
    )
    assert result == [1.0, 0.0], text
    assert reward.stats["judged"] == 2


@settings(max_examples=60, deadline=None)
@given(
    number=written_numbers(),
    fmt=st.sampled_from(FORMATS),
    delta=st.integers(-1000, 1000).filter(bool),
)
def test_math_verify_path_agrees(number, fmt, delta):
    # Without the fast path every pair goes through math-verify: it must agree too.
    value, written, _ = number
    text = wrap(fmt, "Janet has eggs .", written)
    reward = CorrectnessReward(use_fast_path=False)
    result = reward(
        None,
        [text, text],
        answer=[gold_text(value, "latex"), gold_text(value + delta, "canonical")],
    )
    assert result == [1.0, 0.0], text


def gold_text(value: Fraction, style: str) -> str:
    if value.denominator == 1:
        return str(value.numerator) + (".00" if style == "decimal-zeros" else "")
    if style == "latex":
        sign = "-" if value < 0 else ""
        return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"
    return f"{value.numerator}/{value.denominator}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_wrap_examples(fmt):
    # One readable example per format, so a failure above is easy to reproduce by hand.
    text = wrap(fmt, "Janet has 3 eggs .", "-$1,234.50 dollars")
    assert extract_answer(text) == "-1234.5"
