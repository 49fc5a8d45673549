"""Where and how projected latents enter the main model's input."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from latentrl.models.latent_plugin import build_prompt_embeds
from latentrl.models.tokens import LATENT_END_TOKEN, LATENT_START_TOKEN

PROMPT = "Question: Leo has 17 apples. He sells 2. How many apples does Leo have now?\nAnswer:"


@pytest.fixture(scope="module")
def main_model(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return tokenizer, AutoModelForCausalLM.from_pretrained(tiny_model_dir).get_input_embeddings()


def expected(tokenizer, embed, latents, *texts):
    """Embeddings of texts (str) and latent blocks (tensors), concatenated in order."""
    parts = [
        part if isinstance(part, torch.Tensor)
        else embed(torch.tensor(tokenizer(part, add_special_tokens=False)["input_ids"]))
        for part in texts
    ]  # fmt: skip
    return torch.cat(parts)


@pytest.mark.parametrize("use_markers", [True, False])
def test_latents_go_between_question_and_answer_cue(main_model, use_markers):
    tokenizer, embed = main_model
    latents = torch.randn(3, embed.weight.shape[1])
    start, end = (LATENT_START_TOKEN, LATENT_END_TOKEN) if use_markers else ("", "")
    got = build_prompt_embeds(embed, tokenizer, PROMPT, latents, "Answer:", use_markers)
    question = PROMPT.removesuffix("Answer:")
    parts = (
        [question + start, latents, end + "Answer:"]
        if use_markers
        else [question, latents, "Answer:"]
    )
    want = expected(tokenizer, embed, latents, *parts)
    assert torch.equal(got, want)


def test_prefix_position_puts_latents_before_the_whole_prompt(main_model):
    tokenizer, embed = main_model
    latents = torch.randn(4, embed.weight.shape[1])
    got = build_prompt_embeds(embed, tokenizer, PROMPT, latents, "Answer:", False, "prefix")
    assert torch.equal(got[:4], latents)
    assert torch.equal(got[4:], expected(tokenizer, embed, latents, PROMPT))
    marked = build_prompt_embeds(embed, tokenizer, PROMPT, latents, "Answer:", True, "prefix")
    assert torch.equal(
        marked,
        expected(tokenizer, embed, latents, LATENT_START_TOKEN, latents, LATENT_END_TOKEN + PROMPT),
    )


def test_unknown_position_is_named(main_model):
    tokenizer, embed = main_model
    with pytest.raises(ValueError, match="latent position 'suffix'"):
        build_prompt_embeds(
            embed,
            tokenizer,
            PROMPT,
            torch.zeros(1, embed.weight.shape[1]),
            "Answer:",
            True,
            "suffix",
        )


def test_lora_plugin_on_an_assistant_without_latent_token_loads_back(tmp_path):
    """SmolLM2's tokenizer has no ``<|latent|>``: training adds it with an embedding row,
    and a saved LoRA plugin must load onto its base rebuilt the same way (it failed with a
    size mismatch of the embeddings before)."""
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from latentrl.config import LatentPluginSettings
    from latentrl.models.latent_plugin import LatentPlugin, LatentPluginConfig, load_assistant
    from latentrl.models.tokens import LATENT_TOKEN

    words = Tokenizer(models.WordLevel(unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.train_from_iterator(
        [PROMPT], trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>"])
    )
    plain = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>", pad_token="<pad>")
    base = tmp_path / "base"
    plain.save_pretrained(base)
    torch.manual_seed(0)
    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(plain), **shape)).save_pretrained(base)

    assistant, tokenizer = load_assistant(base)
    assert LATENT_TOKEN not in plain.get_vocab() and LATENT_TOKEN in tokenizer.get_vocab()
    assert assistant.get_input_embeddings().num_embeddings == len(plain) + 1
    settings = LatentPluginSettings(num_latents=2, latent_dim=8, use_markers=False, lora=True)
    config = LatentPluginConfig(str(base), 32, str(base), settings)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    plugin = LatentPlugin(config, get_peft_model(assistant, lora), tokenizer, target_rms=1.0)
    with torch.no_grad():  # a trained adapter: B is zero at initialisation
        for name, weight in plugin.named_parameters():
            if "lora_B" in name:
                weight.normal_()
    plugin.eval()
    plugin.save_pretrained(tmp_path / "plugin")

    loaded = LatentPlugin.from_pretrained(tmp_path / "plugin")
    question = ["Leo has 17 apples . He sells 2 ."]
    want = plugin.distribution(*plugin.encode_questions(question))
    got = loaded.distribution(*loaded.encode_questions(question))
    assert torch.allclose(got.mean, want.mean) and torch.allclose(got.log_std, want.log_std)
