"""Chat templates: the tokenizer's own, or a documented default for tokenizers that have none.

The same template renders training text and generation prompts, so a model is asked questions at
generation time exactly as it saw them in training (docs/implementation_details.md, item 2).
"""

from __future__ import annotations

from typing import Any

# Used when a tokenizer has no chat_template (GPT-2 and most base models). Plain-text role markers,
# so no new tokens are needed; every assistant turn ends with the tokenizer's EOS, which is trained.
#   [bos]### System:\n{system}\n\n### User:\n{user}\n\n### Assistant:\n{answer}<eos>### User:\n...
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}### System:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### User:\n{{ message['content'] }}\n\n"
    "{% else %}### Assistant:\n{{ message['content'] }}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give the tokenizer the default template if it has none; True when the default was set."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return True


def render(tokenizer: Any, messages: list[dict[str, str]] | tuple, add_generation_prompt: bool = False) -> str:
    """The chat template applied to messages, as text."""
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )
