"""Judge backends, selected in YAML by registry key (never an import path)."""

from __future__ import annotations

from collections.abc import Callable

from rlaif.errors import RlaifError
from rlaif.judges.base import Judge, Verdict, cache_key


def _embedding(cfg, device: str) -> Judge:
    from rlaif.judges.embedding import EmbeddingJudge

    return EmbeddingJudge(cfg.model, device=device, batch_size=cfg.batch_size)


def _llm(completer_factory):
    def make(cfg, device: str, seed: int = 0, store=None) -> Judge:
        from rlaif.judges.llm import LLMJudge

        return LLMJudge(completer_factory(cfg, device), method=cfg.resolved_method, orders=cfg.orders, cot=cfg.cot,
                        cot_clamp=cfg.cot_clamp, cot_max_tokens=cfg.cot_max_tokens, top_logprobs=cfg.top_logprobs,
                        seed=seed, store=store)

    return make


def _openai_completer(cfg, device):
    from rlaif.judges.openai_backend import OpenAICompleter

    return OpenAICompleter(cfg)


def _transformers_completer(cfg, device):
    from rlaif.judges.hf_backend import TransformersCompleter

    return TransformersCompleter(cfg, device)


BACKENDS: dict[str, Callable] = {
    "embedding": _embedding,
    "openai": _llm(_openai_completer),
    "transformers": _llm(_transformers_completer),
}
# Backends that support pairwise judging (the embedding judge only scores pointwise).
PAIRWISE = {"openai", "transformers"}


def make_judge(cfg, device: str = "cpu", seed: int = 0, store=None) -> Judge:
    try:
        factory = BACKENDS[cfg.backend]
    except KeyError:
        raise RlaifError(
            f"judge.backend: unknown backend {cfg.backend!r}; choose one of {', '.join(sorted(BACKENDS))}"
        ) from None
    if cfg.resolved_method == "pairwise" and cfg.backend not in PAIRWISE:
        raise RlaifError(f"judge.method: backend {cfg.backend!r} scores pointwise only; set judge.method: pointwise")
    if cfg.backend in PAIRWISE:
        return factory(cfg, device, seed, store)
    return factory(cfg, device)


__all__ = ["BACKENDS", "Judge", "Verdict", "cache_key", "make_judge"]
