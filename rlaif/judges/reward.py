"""The judge as a reward for online RL (d-RLAIF, Lee et al. 2023): each rollout scored by the judge.

**Pointwise** (``policy_training.judge_reward.method: pointwise``, the default): one rollout's judge
reward is the judging core's pointwise score (``score_items``, the same
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
  earlier batches (0.0 before any). The mean's state (``running_state``) is part of the
  trainer's checkpoints (rlaif/train/rewards.py), so a killed and resumed run gives such a batch
  the value the uninterrupted run would. Never a silent 0 from the judge; counted per step
  (``judge_unscored``).

**Pairwise** (``method: pairwise``, a backend that compares pairs: the LLM judges): each rollout
is compared with a reference response to the same prompt, the first of the generate stage's
candidates (sampled from the SFT policy; in a round >= 2, from the round's initial policy), by
the judging core's ``compare_items`` in both orders (whatever ``judge.orders`` says), so the
position bias cancels: per principle, P(rollout better) is the mean of P(A) with the rollout as A
and 1 - P(A) with it as B. The principle's reward is ``2 P - 1`` (in [-1, 1]: +1 the judge is
sure the rollout is better, 0 a toss-up, as for a rollout equal to the reference, -1 sure it is
worse) plus the difference of the principle's deterministic checks on the rollout and on the
reference; the principles are combined with the constitution's weights as above. A principle
with no usable verdict in either order is left out; a rollout with none is unscored and handled
by the same rule as above. The calls go through the same call cache (keyed by the messages, so
by the order too).

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

from rlaif.errors import RlaifError
from rlaif.judges.core import Comparison, Item, compare_items, score_items

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


def pair_reward(comp: Comparison, constitution: Constitution, add_checks: bool) -> float | None:
    """One rollout's pairwise judge reward (``comp.a`` the rollout, ``comp.b`` the reference): the
    weighted mean over its principles with a verdict of ``2 P(a better) - 1`` (plus the checks'
    difference where the backend leaves them out); None when no principle has a verdict."""
    values: dict[str, float | None] = {}
    for pid, v in comp.verdicts.items():
        s = None if v.p_first is None else 2.0 * v.p_first - 1.0
        if s is not None and add_checks:
            p = constitution.principle(pid)
            s += p.check_effect(comp.a) - p.check_effect(comp.b)
        values[pid] = s
    from rlaif.judges.ranking import aggregate

    return aggregate(values, constitution, comp.category)


@dataclass
class JudgeReward:
    """Judge rewards for batches of (raw prompt, response); see the module docstring.

    ``make_judge(store)`` builds the judge behind the call cache kept in ``store`` (a run store
    opened on the worker thread from ``store_path``; None: no cache kept across runs).
    ``categories`` maps a raw prompt text to its category (which principles apply).
    ``references`` (raw prompt text -> reference response): pairwise rewards against them; None:
    pointwise."""

    make_judge: Callable[[object], JudgeBackend]
    constitution: Constitution
    categories: dict[str, str | None] = field(default_factory=dict)
    store_path: Path | None = None
    batch_size: int = 64
    totals: dict = field(default_factory=lambda: {"rollouts": 0, "calls": 0, "cache_hits": 0, "unscored": 0})
    references: dict[str, str] | None = None

    def __post_init__(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rlaif-judge-reward")
        self._judge: JudgeBackend | None = None
        self._store = None
        self._sum, self._n = 0.0, 0  # scored judge rewards so far (the all-unscored batch rule)
        self._before = (0.0, 0)  # (sum, count) as they were before the latest batch was counted

    def start(self, prompts: list[str], responses: list[str]) -> concurrent.futures.Future:
        """Put a batch's judge calls in flight; the future gives ``(rewards, stats)``."""
        return self._pool.submit(self._score, list(prompts), list(responses))

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return self.start(prompts, responses).result()[0]

    def running_state(self, before_latest: bool = False) -> dict:
        """The running mean's state (sum and count of the scored judge rewards so far; ``before_latest``: as it
        was before the latest batch, one a resumed trainer scores again, rlaif/train/rewards.py), read on the
        worker thread, so never with a batch half counted."""
        def read():
            total, n = self._before if before_latest else (self._sum, self._n)
            return {"scored_sum": total, "scored_n": n}

        return self._pool.submit(read).result()

    def restore_running_state(self, state: dict) -> None:
        """Continue the running mean from ``running_state()``'s value (a resumed run's checkpoint)."""
        total, n = float(state["scored_sum"]), int(state["scored_n"])

        def put():
            self._sum, self._n = total, n
            self._before = (total, n)

        self._pool.submit(put).result()

    def _judge_here(self) -> JudgeBackend:
        if self._judge is None:
            if self.store_path is not None:
                from rlaif.store import Store

                self._store = Store(self.store_path)
            self._judge = self.make_judge(self._store)
        return self._judge

    def _score(self, prompts: list[str], responses: list[str]) -> tuple[list[float], dict]:
        judge = self._judge_here()
        caps = judge.capabilities
        if self.references is not None:
            raw, st = self._pairwise(judge, prompts, responses)
        else:
            items = [Item(p, self.categories.get(p), r) for p, r in zip(prompts, responses)]
            st = score_items(judge, self.constitution, items, self.batch_size, show_progress=False)
            raw = [item_reward(it, self.constitution, caps.score_range, not caps.applies_checks) for it in items]
        scored = [r for r in raw if r is not None]
        if scored:
            fill = sum(scored) / len(scored)
        else:
            fill = self._sum / self._n if self._n else 0.0
        self._before = (self._sum, self._n)
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

    def _pairwise(self, judge: JudgeBackend, prompts: list[str], responses: list[str]):
        if not judge.capabilities.pairwise:
            raise RlaifError(f"policy_training.judge_reward.method: pairwise needs a judge that compares pairs; "
                             f"{judge.backend!r} scores pointwise only: use method: pointwise or an LLM backend")
        comps = []
        for p, r in zip(prompts, responses):
            if p not in self.references:
                raise RlaifError(f"judge reward (pairwise): no reference response for the prompt {p[:60]!r}; "
                                 "re-run the generate stage")
            cat = self.categories.get(p)
            comps.append(Comparison(p, cat, r, self.references[p],
                                    [pr for pr in self.constitution.principles if pr.applies(cat)]))
        st = compare_items(judge, comps, self.batch_size, show_progress=False)
        return [pair_reward(c, self.constitution, not judge.capabilities.applies_checks) for c in comps], st

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
                     store_path: Path | None, device: str, seed: int,
                     references: dict[str, str] | None = None) -> JudgeReward:
    """The pipeline's judge reward: the configured judge, asked pointwise (whatever ``judge.method``
    labels with), or pairwise in both orders against ``references`` when given, behind the call
    cache in the run store at ``store_path``."""
    from rlaif.judges import make_judge

    if references is None:
        asked = cfg.model_copy(update={"method": "pointwise"})
    else:
        asked = cfg.model_copy(update={"method": "pairwise", "orders": "both"})
    return JudgeReward(lambda store: make_judge(asked, device, seed, store), constitution, categories,
                       store_path, cfg.batch_size, references=references)


def reference_responses(store, gen_hash: str, prompts: list) -> dict[str, str]:
    """Pairwise judge reward: each prompt's reference response, the first of its candidates of the
    generation ``gen_hash`` (``prompts``: records with ``.id`` and ``.text``)."""
    first: dict[str, str] = {}
    for c in store.iter_candidates(gen_hash):  # by prompt id, then index
        first.setdefault(c.prompt_id, c.text)
    return {p.text: first[p.id] for p in prompts if p.id in first}
