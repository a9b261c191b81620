"""The judge as a reward for online RL (d-RLAIF, Lee et al. 2023): each rollout scored by the judge.

One rollout's judge reward is the judging core's pointwise score (``score_items``, the same
loop, cache and backend contract as the judge stage) aggregated over the principles that apply
to the prompt's category with the constitution's weights (``Item.total``):

- an LLM backend answers the pointwise rubric (1-9) and its score is the *expected* digit under
  the token probabilities when it gives them; a backend that declares ``score_range`` (the LLM
  rubric: 1..9) has its scores mapped linearly to [-1, 1]; others (the embedded judge) are used
  as they are;
- the principles' deterministic checks are added to each principle's score (a backend that
  declares ``applies_checks``, the embedded judge, has them in its score already);
- every call goes through the backend's call cache kept in the run store: a re-run or a resumed
  step makes no call that was committed before; the backend's concurrency, rate limits,
  retries and budgets apply unchanged (a budget stop ends training with the backend's error;
  a re-run resumes from the last checkpoint with the calls already paid for);
- **unscored rule**: a rollout with no usable score (every principle unscored: an empty
  response, an unparsable or failed call) gets the mean judge reward of the *scored* rollouts
  of the same batch, so its advantage is about zero and it neither pushes nor pulls the
  policy; in a batch with none scored, each gets the running mean of the judge rewards of
  earlier batches (0.0 before any). Never a silent 0 from the judge; counted per step
  (``judge_unscored``).

The calls of a batch go out together (one ``score_items`` over every (rollout, principle)),
on one worker thread that owns the judge and its own connection to the run store (SQLite
connections stay in their thread), so a trainer can start them and keep computing meanwhile
(``start`` returns a future).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rlaif.judges.core import Item, score_items

if TYPE_CHECKING:  # pragma: no cover
    from rlaif.config import JudgeConfig
    from rlaif.constitution import Constitution
    from rlaif.judges.base import JudgeBackend

# Per-batch figures a trainer logs each step.
STAT_KEYS = ("judge_reward", "judge_calls", "judge_cache_hits", "judge_unscored")


def scale_score(score: float, score_range: tuple[float, float] | None) -> float:
    """A pointwise score mapped from the backend's declared range to [-1, 1] (as is without one)."""
    if score_range is None:
        return score
    lo, hi = score_range
    return 2.0 * (score - lo) / (hi - lo) - 1.0


def item_reward(item: Item, constitution: Constitution, score_range: tuple[float, float] | None,
                add_checks: bool) -> float | None:
    """One rollout's judge reward: the weighted mean over its scored principles of the scaled score
    (plus the principle's checks where the backend leaves them out); None when none is scored."""
    values: dict[str, float | None] = {}
    for pid in item.verdicts:
        s = item.score(pid)
        if s is not None:
            s = scale_score(s, score_range)
            if add_checks:
                s += constitution.principle(pid).check_effect(item.response)
        values[pid] = s
    from rlaif.judges.ranking import aggregate

    return aggregate(values, constitution, item.category)


@dataclass
class JudgeReward:
    """Judge rewards for batches of (raw prompt, response); see the module docstring.

    ``make_judge(store)`` builds the judge behind the call cache kept in ``store`` (a run store
    opened on the worker thread from ``store_path``; None: no cache kept across runs).
    ``categories`` maps a raw prompt text to its category (which principles apply)."""

    make_judge: Callable[[object], JudgeBackend]
    constitution: Constitution
    categories: dict[str, str | None] = field(default_factory=dict)
    store_path: Path | None = None
    batch_size: int = 64
    totals: dict = field(default_factory=lambda: {"rollouts": 0, "calls": 0, "cache_hits": 0, "unscored": 0})

    def __post_init__(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rlaif-judge-reward")
        self._judge: JudgeBackend | None = None
        self._store = None
        self._sum, self._n = 0.0, 0  # scored judge rewards so far (the all-unscored batch rule)

    def start(self, prompts: list[str], responses: list[str]) -> concurrent.futures.Future:
        """Put a batch's judge calls in flight; the future gives ``(rewards, stats)``."""
        return self._pool.submit(self._score, list(prompts), list(responses))

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return self.start(prompts, responses).result()[0]

    def _judge_here(self) -> JudgeBackend:
        if self._judge is None:
            if self.store_path is not None:
                from rlaif.store import Store

                self._store = Store(self.store_path)
            self._judge = self.make_judge(self._store)
        return self._judge

    def _score(self, prompts: list[str], responses: list[str]) -> tuple[list[float], dict]:
        judge = self._judge_here()
        items = [Item(p, self.categories.get(p), r) for p, r in zip(prompts, responses)]
        st = score_items(judge, self.constitution, items, self.batch_size, show_progress=False)
        caps = judge.capabilities
        raw = [item_reward(it, self.constitution, caps.score_range, not caps.applies_checks) for it in items]
        scored = [r for r in raw if r is not None]
        if scored:
            fill = sum(scored) / len(scored)
        else:
            fill = self._sum / self._n if self._n else 0.0
        self._sum += sum(scored)
        self._n += len(scored)
        rewards = [fill if r is None else r for r in raw]
        unscored = len(raw) - len(scored)
        for k, v in (("rollouts", len(raw)), ("calls", st.calls), ("cache_hits", st.cache_hits),
                     ("unscored", unscored)):
            self.totals[k] += v
        stats = {"judge_reward": sum(rewards) / len(rewards) if rewards else 0.0, "judge_calls": float(st.calls),
                 "judge_cache_hits": float(st.cache_hits), "judge_unscored": float(unscored)}
        return rewards, stats

    def close(self) -> None:
        """Finish the worker, close the judge's connections and the store connection (on its thread)."""
        def shut():
            if self._judge is not None:
                self._judge.close()
            if self._store is not None:
                self._store.close()

        self._pool.submit(shut).result()
        self._pool.shutdown()


def judge_reward_for(cfg: JudgeConfig, constitution: Constitution, categories: dict[str, str | None],
                     store_path: Path | None, device: str, seed: int) -> JudgeReward:
    """The pipeline's judge reward: the configured judge, asked pointwise (whatever ``judge.method``
    labels with), behind the call cache in the run store at ``store_path``."""
    from rlaif.judges import make_judge

    pointwise = cfg.model_copy(update={"method": "pointwise"})
    return JudgeReward(lambda store: make_judge(pointwise, device, seed, store), constitution, categories,
                       store_path, cfg.batch_size)
