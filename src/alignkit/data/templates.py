"""Chat templates: the tokenizer's own, or a documented default for tokenizers that have none, or one
chosen by `data.chat_template` (a built-in name below, or a .jinja file).

The same template renders training text and generation prompts, so a model is asked questions at
generation time exactly as it saw them in training (docs/implementation_details.md, item 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignkit.errors import ConfigError

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


# Common templates by name (data.chat_template). Each renders a conversation as a growing prefix
# (adding a turn never rewrites earlier text), which locating the response tokens needs.
CHAT_TEMPLATES = {
    "default": DEFAULT_CHAT_TEMPLATE,
    # OpenAI's ChatML (Qwen, SmolLM2, many fine-tunes)
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    # Llama 3 / 3.1 instruct
    "llama3": (
        "{{ bos_token if bos_token else '' }}"
        "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    # Zephyr / TinyLlama-chat
    "zephyr": (
        "{% for message in messages %}"
        "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    ),
    # Alpaca's instruction / response layout
    "alpaca": (
        "{{ bos_token if bos_token else '' }}"
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
        "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
        "{% else %}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
    ),
}


def choose_chat_template(tokenizer: Any, choice: str) -> None:
    """Set the template `data.chat_template` asks for: "" keeps the tokenizer's own (or the default
    when it has none), a name from CHAT_TEMPLATES, or a path to a .jinja file. The tokenizer saved
    with the model carries it, so later stages and generation use the same."""
    if not choice:
        return
    if choice in CHAT_TEMPLATES:
        tokenizer.chat_template = CHAT_TEMPLATES[choice]
        return
    path = Path(choice).expanduser()
    if path.suffix == ".jinja" or path.exists():
        if not path.is_file():
            raise ConfigError(f"data.chat_template={choice}: no such file")
        tokenizer.chat_template = path.read_text(encoding="utf-8")
        return
    import difflib

    close = difflib.get_close_matches(choice, list(CHAT_TEMPLATES), n=1)
    raise ConfigError(f"data.chat_template={choice!r}: not a built-in template ({', '.join(CHAT_TEMPLATES)}) nor a "
                      ".jinja file" + (f"; did you mean {close[0]!r}?" if close else ""))
