"""What a LaSER retriever thinks in its latent steps.

The latent view reads ``query <EOS>`` and then appends K - 1 soft tokens, each the expected
input embedding under the model's next-token distribution at the previous step. That
distribution is readable: for each query and step, its top-k tokens with probabilities,
shown next to the rationale the explicit view was distilled from. Aggregate: the share of
steps whose top-k tokens include a word of the query's own rationale, and of another
query's (the chance level: common words are read whatever the query).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from latentrl.inspection.readings import draw_grid, shorten, top_tokens
from latentrl.models.retriever import LaSERRetriever

# Words of a rationale a step may name: numbers and words of 3 letters or more.
_WORD = re.compile(r"\d+|[A-Za-z]{3,}")


def rationale_words(rationale: str) -> set[str]:
    """Lower-cased numbers and words of 3+ letters.

    >>> sorted(rationale_words("How many eggs does Janet sell? 16 - 3 = 13"))
    ['13', '16', '3', 'does', 'eggs', 'how', 'janet', 'many', 'sell']
    """
    return {word.lower() for word in _WORD.findall(rationale)}


def names_a_word(readings: Sequence[tuple[str, float]], words: set[str]) -> bool:
    return any(token.strip().lower() in words for token, _ in readings)


@torch.no_grad()
def inspect_retriever(
    retriever: LaSERRetriever,
    queries: Sequence[str],
    rationales: Sequence[str | None],
    top_k: int = 5,
) -> dict[str, Any]:
    """Readings of every latent step of every query (see the module docstring)."""
    _, states = retriever.encode_latent(list(queries))  # [Q, K, H]
    lm = retriever.causal_lm
    probs = torch.softmax(lm.get_output_embeddings()(states).float(), dim=-1)
    steps = [top_tokens(query_probs, retriever.tokenizer, top_k) for query_probs in probs]
    report = {
        "queries": [
            {"query": query, "rationale": rationale, "steps": readings}
            for query, rationale, readings in zip(queries, rationales, steps, strict=True)
        ],
        "top_k": top_k,
    }
    with_rationale = [i for i, rationale in enumerate(rationales) if rationale]
    if len(with_rationale) >= 2:
        words = {i: rationale_words(rationales[i]) for i in with_rationale}
        others = with_rationale[1:] + with_rationale[:1]  # the next query with a rationale

        def share(pick) -> float:
            hits = [names_a_word(step, words[pick(i)]) for i in with_rationale for step in steps[i]]
            return sum(hits) / len(hits)

        report["steps_naming_own_rationale"] = share(lambda i: i)
        report["steps_naming_other_rationale"] = share(lambda i: others[with_rationale.index(i)])
    return report


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    queries = report["queries"]
    lines = [f"queries x latent steps            {len(queries)} x {len(queries[0]['steps'])}"]
    if "steps_naming_own_rationale" in report:
        lines.append(
            f"steps naming a rationale word     {report['steps_naming_own_rationale']:.1%}   "
            f"(another query's rationale: {report['steps_naming_other_rationale']:.1%})"
        )
    else:
        lines.append("steps naming a rationale word     n/a (fewer than 2 queries with rationales)")
    return lines


def draw_pictures(report: Mapping[str, Any], folder: Path, title: str) -> list[Path]:
    """``steps.png``: queries x latent steps, the top token of each step's distribution."""
    queries = report["queries"]
    grid = draw_grid(
        [shorten(q["query"], 44) for q in queries],
        [[step[0] for step in q["steps"]] for q in queries],
        [f"step {k + 1}" for k in range(len(queries[0]["steps"]))],
        f"{title}: the top token of each latent step's soft token",
        folder / "steps.png",
    )
    return [grid]
