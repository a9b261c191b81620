"""Judge backends, selected in YAML by registry key (never an import path)."""

from __future__ import annotations

from typing import Callable

from rlaif.errors import RlaifError
from rlaif.judges.base import Judge, Verdict, cache_key


def _embedding(cfg, device: str) -> Judge:
    from rlaif.judges.embedding import EmbeddingJudge

    return EmbeddingJudge(cfg.model, device=device, batch_size=cfg.batch_size)


BACKENDS: dict[str, Callable] = {"embedding": _embedding}


def make_judge(cfg, device: str = "cpu") -> Judge:
    try:
        factory = BACKENDS[cfg.backend]
    except KeyError:
        raise RlaifError(
            f"judge.backend: unknown backend {cfg.backend!r}; choose one of {', '.join(sorted(BACKENDS))}"
        ) from None
    return factory(cfg, device)


__all__ = ["BACKENDS", "Judge", "Verdict", "cache_key", "make_judge"]
