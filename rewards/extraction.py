r"""Answer extraction: find the final answer a model's text commits to.

Formats, tried in a configurable order (the first one that yields an answer wins):

==============  ======================================  =========================================
name            example                                 which one
==============  ======================================  =========================================
``hash``        ``#### 18``                             the last ``####`` line holding an answer
``boxed``       ``\boxed{\frac{1}{2}}``                 the last complete box (nested braces)
``answer_is``   ``The answer is 18.``, ``final          the last such phrase
                answer is: 18``, ``final answer: 18``
``a_colon``     a line ``A: 18`` (or ``Answer: 18``)    the last such line holding an answer
``last_number`` ``... so she earns $1,234.50.``         the last number anywhere in the text
==============  ======================================  =========================================

Plain numbers come back in the canonical form of :func:`normalize_number` (exact value, no
commas, ``$``, units or trailing zeros), so two plain answers are equal exactly when their
strings are. Anything else (``x+1``, ``\sqrt{2}``) comes back as cleaned text for a symbolic
checker such as math-verify.

This module is imported by the correctness workers: keep it free of heavy imports (no torch).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from fractions import Fraction

__all__ = [
    "A_COLON",
    "ANSWER_IS",
    "BOXED",
    "DEFAULT_ORDER",
    "FORMATS",
    "HASH",
    "LAST_NUMBER",
    "extract_answer",
    "normalize_number",
]

HASH = "hash"
BOXED = "boxed"
ANSWER_IS = "answer_is"
A_COLON = "a_colon"
LAST_NUMBER = "last_number"
FORMATS: tuple[str, ...] = (HASH, BOXED, ANSWER_IS, A_COLON, LAST_NUMBER)
# Explicit answer markers first, the "last number" guess only as a fallback.
DEFAULT_ORDER: tuple[str, ...] = FORMATS

# --- numbers -------------------------------------------------------------------------------

# A plain unsigned number: "1,234.5" (commas only in groups of three, so "1,2,3" stays a list),
# "1234", "3.0", ".5".
_PLAIN = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+"
_SIGN = r"[-+]"
_LATEX_FRAC = (
    rf"\\[dtc]?frac\s*\{{\s*(?P<fnum>{_SIGN}?\s*(?:{_PLAIN}))\s*\}}"
    rf"\s*\{{\s*(?P<fden>{_SIGN}?\s*(?:{_PLAIN}))\s*\}}"
)
_SLASH_FRAC = rf"(?P<num>{_PLAIN})(?:\s*/\s*(?P<den>{_PLAIN}))?"
_NUMBER_BODY = rf"(?:{_LATEX_FRAC}|{_SLASH_FRAC})"
# Anchored at the start of a candidate answer ("-3 dollars", "\frac{1}{2}").
_NUMBER_AT_START = re.compile(rf"(?P<sign>{_SIGN})?\s*{_NUMBER_BODY}")
# Anywhere in running text; digits glued to a word ("x2", "v1.5") are not numbers.
_NUMBER_IN_TEXT = re.compile(rf"(?:(?P<sign>{_SIGN})\s*)?(?<![\w.]){_NUMBER_BODY}")

# Units after a number: words (letters, optional ^2 / ² power) separated by spaces, "/" or ".";
# "%" first. Possessive quantifiers keep this linear on long junk.
_UNIT_WORD = r"[A-Za-z][A-Za-z'’]*+(?:\^\{?\d+\}?|[²³])?+"
_UNIT_TAIL = re.compile(rf"%?+\s*+(?:/\s*+)?+(?:{_UNIT_WORD}(?:[\s./]++{_UNIT_WORD})*+)?+")
# Words that make "2 pi" or "3x" an expression rather than a number with a unit.
_MATH_WORDS = frozenset({"pi", "sqrt", "e", "i", "x", "y", "z", "n", "k"})


def _is_unit_tail(rest: str) -> bool:
    """True if ``rest`` (what follows a number) is only units and sentence punctuation."""
    tail = rest.rstrip().rstrip(".,;:!?)").rstrip()
    if not tail:
        return True
    if tail[0].isalpha() and not rest[0].isspace():
        # "3x", "2e", "2pi" are expressions; "5cm", "18dollars" are units.
        word = re.match(r"[A-Za-z]+", tail)
        if word is None or len(word.group()) < 2 or word.group().lower() in _MATH_WORDS:
            return False
    if _UNIT_TAIL.fullmatch(tail.strip()) is None:
        return False
    first = re.match(r"%?\s*/?\s*([A-Za-z]+)", tail.strip())
    return first is None or first.group(1).lower() not in _MATH_WORDS


def _fraction(text: str) -> Fraction:
    # Decimal keeps "0.1" exact (Fraction(float) would not).
    sign = -1 if text.lstrip().startswith("-") else 1
    return sign * Fraction(Decimal(text.replace(",", "").replace(" ", "").lstrip("+-")))


def _match_value(m: re.Match[str], *, keep_sign: bool = True) -> Fraction | None:
    """The exact value of a ``_NUMBER_*`` match, or None for a zero denominator."""
    if m.group("fnum") is not None:
        num, den = _fraction(m.group("fnum")), _fraction(m.group("fden"))
    else:
        num = _fraction(m.group("num"))
        den = _fraction(m.group("den")) if m.group("den") is not None else Fraction(1)
    if den == 0:
        return None
    value = num / den
    return -value if keep_sign and m.group("sign") == "-" else value


def _format(value: Fraction) -> str:
    """Canonical text of an exact value: "18", "-0.25", "1/3" (a fraction only when the decimal
    expansion does not terminate)."""
    if value.denominator == 1:
        return str(value.numerator)
    den, twos, fives = value.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    text = f"{digits[:-places]}.{digits[-places:]}".rstrip("0")
    return f"-{text}" if value < 0 else text


# --- markup --------------------------------------------------------------------------------

_MARKUP_SUBS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), repl)
    for pattern, repl in (
        # Text wrappers keep their content: "18\text{ dollars}" -> "18 dollars".
        (r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}", r" \1"),
        # LaTeX thousands separators: "1{,}234", "1\,234".
        (r"(?<=\d)\{,\}(?=\d{3})", ","),
        (r"(?<=\d)\\[,!](?=\d{3}(?!\d))", ""),
        (r"\\\$", ""),  # an escaped dollar sign
        (r"\\%", "%"),
        (r"\\(?:left|right|displaystyle)\b|\\[()\[\]!]", ""),
        (r"\\[,;: ]|~", " "),
        (r"\^\s*\{?\\circ\}?|°", ""),  # degrees
        (r"\$", ""),  # dollar signs and math delimiters alike
        (r"\*\*|__", ""),  # markdown bold
        ("[−–]", "-"),  # unicode minus / en dash
    )
)


def _strip_markup(text: str) -> str:
    for pattern, repl in _MARKUP_SUBS:
        text = pattern.sub(repl, text)
    return text


# --- normalization -------------------------------------------------------------------------


def normalize_number(s: str) -> str | None:
    r"""Canonical form of a plain number, or None if ``s`` is not one.

    Strips ``$``, commas, units, a trailing period, a ``%`` sign (GSM8K writes 50% as "50"),
    LaTeX fractions and text wrappers; the value is kept exactly.

    >>> normalize_number("1,234.50")
    '1234.5'
    >>> normalize_number("3.0")
    '3'
    >>> normalize_number("$-18 dollars.")
    '-18'
    >>> normalize_number(r"\dfrac{3}{4}")
    '0.75'
    >>> normalize_number("2/6")
    '1/3'
    >>> normalize_number("50%")
    '50'
    >>> normalize_number("2x + 1") is None
    True
    """
    text = _strip_markup(s).strip()
    m = _NUMBER_AT_START.match(text)
    if m is None or not _is_unit_tail(text[m.end() :]):
        return None
    value = _match_value(m)
    return None if value is None else _format(value)


# --- per-format finders --------------------------------------------------------------------

# What follows a marker is captured in a lookahead, so that a second marker on the same line is
# found too (the last one wins); capped, so that a long line of markers stays linear.
_HASH_RE = re.compile(r"(?<!#)####(?!#)[ \t]*(?=([^\n]{0,300}))")
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS_RE = re.compile(r"(?i)\b(?:final\s+)?answer\s*(?:is\b\s*:?|:)[ \t]*(?=([^\n]{0,300}))")
_A_COLON_RE = re.compile(r"(?im)^[ \t>*_#-]*(?:A|(?:final\s+)?answer)[*_]*[ \t]*:[ \t]*([^\n]*)")
# Where a sentence ends: ". " but not the point in "18.5"; ", " but not "1,234".
_SENTENCE_END = re.compile(r"[.!?;,](?=\s|$)")
# A word of three or more letters that is not a LaTeX command: the mark of prose, not math.
_PROSE_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_MATH_FUNCTIONS = frozenset({"sqrt", "sin", "cos", "tan", "log", "exp", "frac", "pi", "mod"})


def box_contents(text: str) -> list[str]:
    """Contents of the complete ``\\boxed{...}`` groups, ordered by where they start; an unclosed
    one (a truncated generation) is skipped."""
    box_braces = {m.end() - 1 for m in _BOX_RE.finditer(text)}
    if not box_braces:
        return []
    # One pass with a brace stack, so a degenerate text full of unclosed boxes stays linear.
    found: list[tuple[int, str]] = []
    open_braces: list[int] = []
    for i, char in enumerate(text):
        if char == "{":
            open_braces.append(i)
        elif char == "}" and open_braces:
            start = open_braces.pop()
            if start in box_braces:
                found.append((start, text[start + 1 : i]))
    return [content for _, content in sorted(found)]


def _looks_like_math(text: str) -> bool:
    words = (w for w in _PROSE_WORD.findall(text) if w.lower() not in _MATH_FUNCTIONS)
    return bool(text) and next(words, None) is None


def _number_in(text: str, *, last: bool) -> str | None:
    """The first (or last) number in running text, canonical."""
    matches = list(_NUMBER_IN_TEXT.finditer(text))
    for m in reversed(matches) if last else matches:
        # "16 - 3" is a subtraction, not the number -3: drop a sign that follows an operand.
        before = text[: m.start()].rstrip()
        binary = bool(before) and (before[-1].isdigit() or before[-1] in ")]}%")
        glued = m.start() > 0 and (text[m.start() - 1].isalnum() or text[m.start() - 1] == "_")
        value = _match_value(m, keep_sign=not (binary or glued))
        if value is not None:
            return _format(value)
    return None


def _from_box(content: str) -> str | None:
    number = normalize_number(content)
    if number is not None:
        return number
    # Keep LaTeX for the symbolic checker; "$" is a delimiter here, never a currency sign.
    cleaned = content.replace("$", "").strip().rstrip(".").strip()
    return cleaned or None


def _from_marker(rest: str, *, prose_ok: bool) -> str | None:
    """The answer in the text after a marker (``####``, ``A:``, "the answer is")."""
    boxes = box_contents(rest)
    if boxes:
        return _from_box(boxes[-1])
    rest = _strip_markup(rest)
    rest = _SENTENCE_END.split(rest, maxsplit=1)[0].strip(" \t:=*_")
    number = normalize_number(rest)
    if number is not None:
        return number
    if _looks_like_math(rest):
        return rest.strip() or None
    # Prose: "The answer is therefore 18 apples" -> the first number in it.
    return _number_in(rest, last=False) if prose_ok else None


def _find_hash(text: str) -> str | None:
    for m in reversed(list(_HASH_RE.finditer(text))):
        answer = _from_marker(m.group(1), prose_ok=False)
        if answer is not None:
            return answer
    return None


def _find_boxed(text: str) -> str | None:
    for content in reversed(box_contents(text)):
        answer = _from_box(content)
        if answer is not None:
            return answer
    return None


def _find_answer_is(text: str) -> str | None:
    for m in reversed(list(_ANSWER_IS_RE.finditer(text))):
        answer = _from_marker(m.group(1), prose_ok=True)
        if answer is not None:
            return answer
    return None


def _find_a_colon(text: str) -> str | None:
    for m in reversed(list(_A_COLON_RE.finditer(text))):
        answer = _from_marker(m.group(1), prose_ok=False)
        if answer is not None:
            return answer
    return None


def _find_last_number(text: str) -> str | None:
    return _number_in(_strip_markup(text), last=True)


_FINDERS: dict[str, Callable[[str], str | None]] = {
    HASH: _find_hash,
    BOXED: _find_boxed,
    ANSWER_IS: _find_answer_is,
    A_COLON: _find_a_colon,
    LAST_NUMBER: _find_last_number,
}


def check_order(order: Sequence[str]) -> tuple[str, ...]:
    """Validate an extraction order; returns it as a tuple."""
    if isinstance(order, str):
        raise ValueError(
            f"extraction order must be a sequence of format names, got the string {order!r}"
        )
    unknown = [name for name in order if name not in _FINDERS]
    if unknown:
        raise ValueError(f"unknown answer format(s) {unknown}; known formats: {list(FORMATS)}")
    if not order:
        raise ValueError(f"extraction order is empty; choose from {list(FORMATS)}")
    return tuple(order)


def extract_answer(text: str, order: Sequence[str] = DEFAULT_ORDER) -> str | None:
    r"""The final answer in ``text``, trying the formats in ``order``; None if none matches.

    >>> extract_answer("She makes 9 * 2 = $18 a day.\n#### 18")
    '18'
    >>> extract_answer(r"so the total is \boxed{\frac{1}{2}}")
    '0.5'
    >>> extract_answer(r"\boxed{\frac{\sqrt{2}}{2}}")
    '\\frac{\\sqrt{2}}{2}'
    >>> extract_answer("The final answer is: $1,234.50.")
    '1234.5'
    >>> extract_answer("16 - 3 = 13 eggs\nA: 13")
    '13'
    >>> extract_answer("I am not sure.") is None
    True
    >>> extract_answer("#### 5\nThe answer is 6", order=["answer_is", "hash"])
    '6'
    """
    if not isinstance(text, str):
        raise TypeError(f"extract_answer expects a str, got {type(text).__name__}")
    for name in check_order(order):
        answer = _FINDERS[name](text)
        if answer is not None:
            return answer
    return None
