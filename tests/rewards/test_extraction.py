"""Answer extraction: each format, the order, number normalization."""

from __future__ import annotations

import pytest

from latentrl.rewards import FORMATS, extract_answer, normalize_number
from latentrl.rewards.extraction import DEFAULT_ORDER


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Janet sells 9 eggs.\n#### 18", "18"),
        ("#### 5\nwait, recompute\n#### 1,234", "1234"),  # the last #### line
        ("#### $1,234.50\n", "1234.5"),
        ("#### -3", "-3"),
        ("#### 18 dollars", "18"),
        ("##### 7", None),  # five hashes is a heading, not GSM8K's marker
        ("#### Step 1", None),  # a markdown heading is not an answer
    ],
)
def test_hash(text, expected):
    assert extract_answer(text, order=["hash"]) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{18}.", "18"),
        (r"\boxed{1} then \boxed{2}", "2"),  # the last box
        (r"\boxed{\frac{1}{2}}", "0.5"),
        (r"\boxed{\dfrac{-3}{4}}", "-0.75"),
        (r"\boxed{\$1{,}234}", "1234"),
        (r"\boxed{18 \text{ dollars}}", "18"),
        (r"\boxed{50\%}", "50"),
        (
            r"\boxed{\frac{\sqrt{2}}{2}}",
            r"\frac{\sqrt{2}}{2}",
        ),  # nested braces, kept for math-verify
        (r"\boxed{2x+1}", "2x+1"),
        (r"\boxed {3}", "3"),
        (r"\boxed{5", None),  # truncated generation: no complete box
    ],
)
def test_boxed(text, expected):
    assert extract_answer(text, order=["boxed"]) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 18.", "18"),
        ("the final answer is: 1/2", "0.5"),
        ("Final answer: $-7$", "-7"),
        ("The answer is therefore 18 apples.", "18"),
        ("The answer is **42**, as computed.", "42"),
        (r"The answer is $\boxed{42}$.", "42"),
        ("I think the answer is 5. No, the answer is 6.", "6"),
        ("The answer is x = 5", "x = 5"),
        ("The answer is not obvious", None),
    ],
)
def test_answer_is(text, expected):
    assert extract_answer(text, order=["answer_is"]) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16 - 3 = 13\nA: 13", "13"),
        ("A: 5\nA: 1,000,000", "1000000"),
        ("Answer: 3.50", "3.5"),
        ("A: Natalia sold 48/2 = 24 clips", None),  # prose, not an answer line
        ("Q: how many? A: 5", None),  # not at the start of a line
    ],
)
def test_a_colon(text, expected):
    assert extract_answer(text, order=["a_colon"]) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She makes 9 * 2 = $<<9*2=18>>18 every day.", "18"),
        ("It costs $1,234.50.", "1234.5"),
        ("It is 16 - 3", "3"),  # a subtraction, not -3
        ("The temperature is -3 degrees.", "-3"),
        ("use 3/4 of it", "0.75"),
        (r"so \frac{1}{2} remains", "0.5"),
        ("the list 1,2,3", "3"),
        ("version v2 and x3", None),  # digits glued to a word
        ("no numbers here", None),
    ],
)
def test_last_number(text, expected):
    assert extract_answer(text, order=["last_number"]) == expected


def test_default_order_prefers_explicit_markers():
    assert DEFAULT_ORDER == ("hash", "boxed", "answer_is", "a_colon", "last_number")
    assert FORMATS == DEFAULT_ORDER
    text = "#### 5\n\\boxed{6}\nThe answer is 7.\nA: 8\n9"
    assert extract_answer(text) == "5"
    assert extract_answer(text, order=["a_colon", "hash"]) == "8"
    assert extract_answer(text, order=("last_number",)) == "9"
    # A format that finds nothing hands over to the next one.
    assert extract_answer("\\boxed{6}\nA: 8", order=["hash", "a_colon", "boxed"]) == "8"


def test_order_validation():
    with pytest.raises(ValueError) as info:
        extract_answer("#### 1", order=["hash", "latex"])
    assert str(info.value) == (
        "unknown answer format(s) ['latex']; known formats: "
        "['hash', 'boxed', 'answer_is', 'a_colon', 'last_number']"
    )
    with pytest.raises(ValueError, match="got the string 'hash'"):
        extract_answer("#### 1", order="hash")
    with pytest.raises(ValueError, match="extraction order is empty"):
        extract_answer("#### 1", order=[])
    with pytest.raises(TypeError, match="extract_answer expects a str, got NoneType"):
        extract_answer(None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,234.50", "1234.5"),
        ("3.0", "3"),
        ("-0", "0"),
        ("007", "7"),
        ("+5", "5"),
        ("$1,000,000", "1000000"),
        (r"\$18", "18"),
        ("18 dollars.", "18"),
        ("5 cm", "5"),
        ("10 km/h", "10"),
        ("12 m²", "12"),
        ("50%", "50"),
        ("4/6", "2/3"),
        ("-1/8", "-0.125"),
        (r"\frac{1}{3}", "1/3"),
        (r"-\dfrac{10}{4}", "-2.5"),
        (r"\tfrac{-1}{2}", "-0.5"),
        ("−4", "-4"),  # unicode minus
        ("123456789012345678901234567890", "123456789012345678901234567890"),
        ("0.1", "0.1"),  # exact, no float rounding
        ("2x", None),
        ("2 pi", None),
        ("1,23", None),  # not a thousands grouping
        ("1e5", None),
        ("3 + 4", None),
        ("1/0", None),
        ("", None),
        ("seven", None),
    ],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


def test_normalize_is_idempotent_on_extracted_numbers():
    for text in ["#### $1,234.50", r"\boxed{\frac{2}{6}}", "A: -0.250"]:
        answer = extract_answer(text)
        assert normalize_number(answer) == answer


def test_long_degenerate_text_is_fast():
    import time

    text = "\\boxed{" * 20000 + "1,2" * 20000 + "answer is " * 5000
    start = time.perf_counter()
    assert extract_answer(text) == "2"
    assert time.perf_counter() - start < 5.0  # quadratic scanning took 40 s


# Endings of SmolLM2-135M-Instruct's answers to chat prompts (latentrl eval samples).
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ben has 82 - 62 = 14 apples left.\n#### 14\nThe answer is: 14", "14"),
        ("2 + 4 = 6 bolts.\n\nThe final answer is 6.", "6"),
        ("160,000 + $80,000 = $240,000.\n\nThe final answer is 240,000.", "240000"),
        ("Final answer: 56\n\nSo the answer", "56"),
        ("He has 5 apples.\n#### 5\n\nI hope this helps!", "5"),
        ("So the total is \\boxed{42} dollars.\n\nLet me know if you have questions.", "42"),
        ("The answer is 5 apples.", "5"),
    ],
)
def test_real_model_answers(text, expected):
    assert extract_answer(text) == expected
