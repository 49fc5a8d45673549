"""Turn what TRL passes as a completion into plain text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["completion_text"]


def completion_text(completion: Any, index: int = 0) -> str:
    """The text of one completion: a string as is, or TRL's conversational form (a list of
    ``{"role", "content"}`` messages) reduced to the last message's content.

    Content given as parts (``[{"type": "text", "text": ...}, ...]``) is joined.

    >>> completion_text("#### 18")
    '#### 18'
    >>> completion_text([{"role": "assistant", "content": "#### 18"}])
    '#### 18'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        message = completion
    elif isinstance(completion, Sequence) and completion:
        message = completion[-1]
    else:
        raise TypeError(
            f"completion {index} must be a string or a non-empty list of messages, "
            f"got {type(completion).__name__}: {completion!r:.80}"
        )
    if not isinstance(message, Mapping) or "content" not in message:
        raise TypeError(f"completion {index}: the last message has no 'content': {message!r:.80}")
    content = message["content"]
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # Multimodal content parts: keep the text ones.
    return "".join(
        part if isinstance(part, str) else str(part.get("text") or "")
        for part in content
        if isinstance(part, str)
        or (isinstance(part, Mapping) and part.get("type", "text") == "text")
    )
