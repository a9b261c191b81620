"""Judge backends, selected in YAML by registry key (never an import path).

Each entry declares what the backend can do (``Capabilities``: read by the config
check without building it) and how to build it; every factory has the one
signature ``factory(cfg, device, seed) -> JudgeBackend``. ``make_judge`` puts the
judge behind the call cache. Adding a backend is one entry here plus its own
module (README, "Design").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rlaif.errors import RlaifError
from rlaif.judges.base import Capabilities, Judge, JudgeBackend, Verdict, cache_key
from rlaif.judges.embedding import EmbeddingJudge
from rlaif.judges.llm import LLMJudge


@dataclass(frozen=True)
class BackendEntry:
    factory: Callable[..., JudgeBackend]  # (cfg: JudgeConfig, device: str, seed: int) -> JudgeBackend
    capabilities: Capabilities
    description: str = ""
    # (cfg, seed) -> a judge with the cache keys of factory's that loads no model and makes no call
    # (rlaif/judges/plan.py); None: plan_judge builds the backend and copies its identity.
    plan: Callable[..., JudgeBackend] | None = None
    # (cfg, device) -> the LLM completer, for writing text (critiques, revisions); None: it writes none.
    completer: Callable[..., object] | None = None


def _embedding(cfg, device: str, seed: int) -> JudgeBackend:
    return EmbeddingJudge(cfg.model, device=device, batch_size=cfg.batch_size)


def _llm_judge(completer, cfg, seed: int) -> LLMJudge:
    return LLMJudge(completer, method=cfg.resolved_method, orders=cfg.orders, cot=cfg.cot, cot_clamp=cfg.cot_clamp,
                    cot_max_tokens=cfg.cot_max_tokens, top_logprobs=cfg.top_logprobs, seed=seed)


def _llm(completer_factory):
    def make(cfg, device: str, seed: int) -> JudgeBackend:
        return _llm_judge(completer_factory(cfg, device), cfg, seed)

    return make


def _llm_plan(cfg, seed: int) -> JudgeBackend:
    from rlaif.judges.plan import PlanCompleter

    return _llm_judge(PlanCompleter(cfg), cfg, seed)


def _embedding_plan(cfg, seed: int) -> JudgeBackend:
    from rlaif.judges.plan import PlannedScorer

    return PlannedScorer(EmbeddingJudge.backend, cfg.model, EmbeddingJudge.template_hash, EmbeddingJudge.capabilities)


def _openai_completer(cfg, device):
    from rlaif.judges.openai_backend import OpenAICompleter

    return OpenAICompleter(cfg)


def _transformers_completer(cfg, device):
    from rlaif.judges.hf_backend import TransformersCompleter

    return TransformersCompleter(cfg, device)


BACKENDS: dict[str, BackendEntry] = {
    "embedding": BackendEntry(_embedding, EmbeddingJudge.capabilities,
                              "MiniLM sentence embeddings against the principles' examples, offline on CPU",
                              _embedding_plan),
    "openai": BackendEntry(_llm(_openai_completer), LLMJudge.capabilities,
                           "an LLM behind any OpenAI-compatible server (vLLM, TGI, llama.cpp, OpenAI)", _llm_plan,
                           _openai_completer),
    "transformers": BackendEntry(_llm(_transformers_completer), LLMJudge.capabilities,
                                 "a local causal LM loaded with transformers", _llm_plan,
                                 _transformers_completer),
}


def backend_entry(name: str) -> BackendEntry:
    try:
        return BACKENDS[name]
    except KeyError:
        raise RlaifError(
            f"judge.backend: unknown backend {name!r}; choose one of {', '.join(sorted(BACKENDS))}"
        ) from None


def compares_pairs(name: str) -> bool:
    """Whether the registered backend ``name`` judges pairwise (False for an unknown name)."""
    entry = BACKENDS.get(name)
    return entry is not None and entry.capabilities.pairwise


def make_judge(cfg, device: str = "cpu", seed: int = 0, store=None) -> JudgeBackend:
    """The judge ``cfg`` (a JudgeConfig) names, behind the call cache kept in ``store`` (or none)."""
    entry = backend_entry(cfg.backend)
    if cfg.resolved_method == "pairwise" and not entry.capabilities.pairwise:
        raise RlaifError(f"judge.method: backend {cfg.backend!r} scores pointwise only; set judge.method: pointwise")
    return entry.factory(cfg, device, seed).with_cache(store)


def plan_judge(cfg, seed: int = 0, store=None) -> JudgeBackend:
    """A judge with the cache keys ``make_judge(cfg)`` would use that makes no calls: each call not in
    ``store``'s call cache is counted (``report()["calls"]``, with estimated tokens and cost for an LLM
    backend) and answered unscored; nothing is written to ``store``."""
    from rlaif.judges.plan import PlannedScorer, ReadOnlyCache

    entry = backend_entry(cfg.backend)
    if entry.plan is not None:
        judge = entry.plan(cfg, seed)
    else:  # build it once for its identity (a backend whose calls are its pointwise scores)
        real = entry.factory(cfg, "cpu", seed)
        judge = PlannedScorer(real.backend, real.model, real.template_hash, real.capabilities)
        real.close()
    return judge.with_cache(ReadOnlyCache(store) if store is not None else None)


__all__ = ["BACKENDS", "BackendEntry", "Capabilities", "Judge", "JudgeBackend", "Verdict", "backend_entry",
           "cache_key", "compares_pairs", "make_judge", "plan_judge"]
