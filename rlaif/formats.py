"""Text formats shared by every stage (one place, so training and scoring agree).

Models with a chat template are rendered by it (``rlaif.chat``); these are the formats of the rest:
- ``TINY_CHAT_TEMPLATE``: the chat template rlaif gives its locally built tiny model, so the demo takes the
  same chat path as real models; a single user turn renders exactly as ``POLICY_PROMPT``;
- ``POLICY_PROMPT`` / ``rm_plain_text``: for a model without any chat template (a base LM, an encoder RM).
"""

from __future__ import annotations

POLICY_PROMPT = "### Prompt:\n{prompt}\n### Response:\n"

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ '### System:\n' + m['content'] | trim + '\n' }}"
    "{% elif m['role'] == 'user' %}{{ '### Prompt:\n' + m['content'] | trim + '\n' }}"
    "{% else %}{{ '### Response:\n' + m['content'] | trim + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)


def policy_prompt(prompt: str) -> str:
    """The plain-format policy input for a one-turn prompt (models without a chat template)."""
    return POLICY_PROMPT.format(prompt=prompt.strip())


def rm_plain_text(prompt: str, response: str) -> str:
    """The reward model's input for one (prompt, response) when its tokenizer has no chat template."""
    return f"Question: {prompt.strip()}\nAnswer: {response.strip()}"


rm_text = rm_plain_text  # the former name
