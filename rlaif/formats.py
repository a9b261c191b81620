"""Text formats shared by every stage (one place, so training and scoring agree)."""

from __future__ import annotations

POLICY_PROMPT = "### Prompt:\n{prompt}\n### Response:\n"


def policy_prompt(prompt: str) -> str:
    """The policy's input for a user prompt (tiny models have no chat template)."""
    return POLICY_PROMPT.format(prompt=prompt.strip())


def rm_text(prompt: str, response: str) -> str:
    """The reward model's input for one (prompt, response)."""
    return f"Question: {prompt.strip()}\nAnswer: {response.strip()}"
