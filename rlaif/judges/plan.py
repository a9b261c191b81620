"""Judges that plan calls instead of making them (``rlaif constitution diff --run``).

A planned judge has the identity, templates and cache keys of the real one, so the judging
core (rlaif/judges/core.py) and the call cache (rlaif/judges/cache.py) run unchanged: a call
found in the run's cache is a hit, any other call is counted (``report()["calls"]``) and
answered unscored. ``ReadOnlyCache`` lets the plan read the run's cache and write nothing.
No model is loaded and no request leaves the machine.
"""

from __future__ import annotations

from typing import Any

from rlaif.chat import served_messages
from rlaif.judges.base import Capabilities, JudgeBackend, ScoreRequest, Verdict
from rlaif.judges.llm import Call, Completer, Completion

PLANNED = "planned, not made"


class ReadOnlyCache:
    """A run store's call cache seen read-only: lookups go to the store, writes go nowhere."""

    def __init__(self, store):
        self.store = store

    def cache_get_many(self, keys: list[str]) -> dict[str, Any]:
        return self.store.cache_get_many(keys)

    def cache_put_many(self, items: dict[str, Any]) -> None:
        pass


class PlannedScorer(JudgeBackend):
    """A pointwise scorer's identity (its calls are its score requests) that scores nothing."""

    def __init__(self, backend: str, model: str, template_hash: str, capabilities: Capabilities):
        self.backend, self.model, self.template_hash = backend, model, template_hash
        self.capabilities = capabilities

    def score_many(self, requests: list[ScoreRequest]) -> list[Verdict]:
        return [Verdict.unscored(PLANNED) for _ in requests]


class PlanCompleter(Completer):
    """An LLM backend's identity (``backend`` = the registry key, ``model``) that answers every call
    with an error (never cached) and counts the tokens the call would take: the prompt as characters
    / 4 (the estimate the rate limiter uses) and ``max_tokens`` for the completion (an upper bound)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.backend, self.model = cfg.backend, cfg.model
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def sent(self, messages: list[dict]) -> list[dict]:
        """The real backend's keys: the openai backend sends the shape ``judge.system_role`` asks for."""
        return served_messages(messages, self.cfg.system_role) if self.backend == "openai" else messages

    def run(self, calls: list[Call]) -> list[Completion]:
        for call in calls:
            self.prompt_tokens += round(sum(len(m["content"]) for m in call.messages) / 4)
            self.completion_tokens += call.max_tokens
        return [Completion(error=PLANNED) for _ in calls]

    def cost_usd(self) -> float | None:
        """At the configured prices; None when the config sets none."""
        c = self.cfg
        if not (c.price_prompt_per_mtok or c.price_completion_per_mtok):
            return None
        return (self.prompt_tokens * c.price_prompt_per_mtok + self.completion_tokens * c.price_completion_per_mtok) / 1e6

    def usage(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": self.cost_usd()}
