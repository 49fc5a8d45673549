"""What a model reads for a task's question: the task's plain template, or the model's chat
template.

Base and tiny models read ``task.prompt_template`` (``Question: ...\\nAnswer:``), where
few-shot examples are earlier question/answer pairs. An instruction-tuned model reads its
own chat template: the question and how to state the final answer in the user turn (see
``Task.chat_message``), few-shot examples as earlier user/assistant turns.

>>> task = Task(name="t", source=lambda split: [], splits=("test",))
>>> print(render_prompt(task, "1 + 1?", tokenizer=None, chat=False,
...                     examples=[{"question": "2 + 2?", "solution": "#### 4"}]))
Question: 2 + 2?
Answer: #### 4
<BLANKLINE>
Question: 1 + 1?
Answer:
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from latentrl.tasks import Task, get_task

if TYPE_CHECKING:
    import datasets

    from latentrl.config import TaskConfig


def configured_task(cfg: TaskConfig) -> Task:
    """The task a config names, with the config's ``chat_instruction`` when it gives one."""
    task = get_task(cfg.name)
    if cfg.chat_instruction is None:
        return task
    return dataclasses.replace(task, chat_instruction=cfg.chat_instruction)


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def use_chat_template(tokenizer, setting: bool | None, where: str = "chat_template") -> bool:
    """``setting``, or (None) whether the model has a chat template; True without one fails."""
    if setting and not has_chat_template(tokenizer):
        raise ValueError(f"{where}: true, but the model's tokenizer has no chat template")
    return has_chat_template(tokenizer) if setting is None else setting


def render_prompt(
    task: Task,
    question: str,
    tokenizer,
    chat: bool,
    examples: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The prompt text for ``question``, after the worked ``examples`` (rows of the task)."""
    if not chat:
        shots = "".join(task.format_prompt(ex["question"]) + task.target(ex) + "\n\n"
                        for ex in examples)  # fmt: skip
        return shots + task.format_prompt(question)
    messages = []
    for ex in examples:
        messages += [
            {"role": "user", "content": task.chat_message(ex["question"])},
            {"role": "assistant", "content": ex["solution"]},
        ]
    messages.append({"role": "user", "content": task.chat_message(question)})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def with_prompts(
    task: Task,
    rows: datasets.Dataset,
    tokenizer,
    chat: bool,
    examples: Sequence[Mapping[str, Any]] = (),
) -> datasets.Dataset:
    """``rows`` with their ``prompt`` column rendered by :func:`render_prompt`."""
    if not chat and not examples:
        return rows  # Task.load already wrote the plain prompts
    examples = [dict(ex) for ex in examples]
    return rows.map(
        lambda row: {"prompt": render_prompt(task, row["question"], tokenizer, chat, examples)}
    )
