"""Prompts for chat models: the chat template, the answer instruction, few-shot turns."""

from __future__ import annotations

import pytest

from latentrl.config import EvalConfig, TaskConfig, load_config
from latentrl.models.tiny import train_tokenizer
from latentrl.prompts import configured_task, render_prompt, use_chat_template, with_prompts
from latentrl.tasks import get_task

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ADDITION = {"steps": 1, "ops": "+", "max_value": 9}


@pytest.fixture(scope="module")
def tokenizers():
    plain = train_tokenizer(["Question: 1 + 1?\nAnswer: #### 2"] * 4, vocab_size=300)
    chat = train_tokenizer(["Question: 1 + 1?\nAnswer: #### 2"] * 4, vocab_size=300)
    chat.chat_template = CHATML
    return plain, chat


def test_chat_prompts_state_the_answer_format_after_worked_examples(tokenizers):
    _, chat = tokenizers
    task = get_task("arith")
    examples = task.load("train", limit=2, **ADDITION)
    row = task.load("test", limit=1, **ADDITION)[0]
    prompt = render_prompt(task, row["question"], chat, chat=True, examples=examples)
    instruction = (
        "Solve it step by step. Then write the final answer on the last line: '####' "
        "followed by the number."
    )
    expected = (
        "".join(
            f"<|im_start|>user\n{ex['question']}\n\n{instruction}<|im_end|>\n"
            f"<|im_start|>assistant\n{ex['solution']}<|im_end|>\n"
            for ex in examples
        )
        + f"<|im_start|>user\n{row['question']}\n\n{instruction}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt == expected


def test_plain_prompts_keep_the_task_template(tokenizers):
    plain, _ = tokenizers
    task = get_task("arith")
    rows = task.load("test", limit=3, **ADDITION)
    assert with_prompts(task, rows, plain, chat=False) is rows
    shots = task.load("train", limit=1, **ADDITION)
    rendered = with_prompts(task, rows, plain, chat=False, examples=shots)
    first = shots[0]
    assert rendered[0]["prompt"] == (
        f"Question: {first['question']}\nAnswer: {first['solution']}\n\n{rows[0]['prompt']}"
    )


def test_chat_template_defaults_to_what_the_model_has(tokenizers):
    plain, chat = tokenizers
    assert use_chat_template(chat, None) is True
    assert use_chat_template(plain, None) is False
    assert use_chat_template(chat, False) is False
    with pytest.raises(ValueError, match="chat_template: true, but the model's tokenizer has no"):
        use_chat_template(plain, True)


def test_a_config_can_ask_for_another_answer_instruction():
    task = configured_task(TaskConfig(name="arith", chat_instruction="Reply with the number only."))
    assert task.chat_message("1 + 1?") == "1 + 1?\n\nReply with the number only."
    assert configured_task(TaskConfig(name="math500")).chat_message("x?").endswith("\\boxed{}.")


def test_a_plugin_reads_plain_prompts():
    with pytest.raises(ValueError, match="chat_template: a latent plugin reads the task's plain"):
        load_config(EvalConfig, overrides=["model=org/m", "plugin=p", "chat_template=true"])
