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
