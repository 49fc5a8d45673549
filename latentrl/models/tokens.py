"""Special tokens latentrl adds to every tokenizer it trains or adapts.

The latent markers delimit injected latent vectors in a main model's input
(``prefix <|latent_start|> z_1 .. z_N <|latent_end|> answer cue``); the placeholder
marks the N positions whose hidden states an assistant policy turns into latents.
"""

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
LATENT_START_TOKEN = "<|latent_start|>"
LATENT_END_TOKEN = "<|latent_end|>"
LATENT_TOKEN = "<|latent|>"

SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN, LATENT_START_TOKEN, LATENT_END_TOKEN, LATENT_TOKEN)


def split_answer_cue(prompt: str, answer_cue: str) -> tuple[str, str]:
    """``(prefix, cue)``: where the latent slot goes in ``prompt``, before its answer cue
    (``cue`` is ``""`` when the prompt does not end with one).

    >>> split_answer_cue("Question: 2 + 3?\\nAnswer:", "Answer:")
    ('Question: 2 + 3?\\n', 'Answer:')
    >>> split_answer_cue("Question: 2 + 3?", "Answer:")
    ('Question: 2 + 3?', '')
    """
    if answer_cue and prompt.endswith(answer_cue):
        return prompt[: -len(answer_cue)], answer_cue
    return prompt, ""
