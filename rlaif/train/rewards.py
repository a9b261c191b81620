"""What rewards online RL (``policy_training.reward``): the trained reward model, the judge
(rlaif/judges/reward.py), or a weighted sum ``w_rm * RM + w_judge * judge``.

- PPO (rlaif/train/ppo.py) calls ``start_reward(fn, prompts, responses)`` right after sampling
  and reads ``.result() -> (scores, stats)`` after its reference and value forward passes, so
  the judge's calls are in flight while the trainer computes; with the reward model alone the
  reward function is the plain ``score`` callable of before (same figures, same run hashes).
- RLOO / GRPO (rlaif/train/online.py): trl takes a list of reward functions and
  ``reward_weights``; the judge is an *async* reward function (trl awaits it on its event loop,
  its calls go out together through the backend's concurrency), logging ``judge/calls``,
  ``judge/cache_hits`` and ``judge/unscored`` per step; trl logs each function's mean
  (``rewards/judge/mean``, ``rewards/reward_model/mean``). With the judge in the sum, the
  missing-EOS penalty is its own reward function (weight 1), so it is not scaled by a weight.

The judge reward's running mean (what a batch with no scored rollout gets) is checkpointed with
the trainer: every process's ``JudgeReward.running_state()`` is gathered and the main process
writes them to ``judge_reward_state.json`` in the checkpoint folder *before* the checkpoint's
own files (PPO: into its temporary folder before the rename; trl: when a save is due at the end
of a step, ``JudgeStateCallback``), so a checkpoint counted complete (rlaif/train/checkpoints.py)
always has it. A resumed run reads it back (``restore_judge_state``) before its first step.

RLOO/GRPO with ``num_iterations`` > 1 (or ``steps_per_generation`` over the accumulation steps) train several
optimizer steps on one generated batch (trl's ``_buffered_inputs``, regenerated every ``steps_per_generation *
num_iterations`` micro-steps, counted by ``_step``). A checkpoint saved inside such a block holds the mean with
that batch counted, but the buffer is not in the checkpoint: the resumed trainer starts ``_step`` at 0 and
generates and scores that block's batch again (same prompts: its sampler repeats them for the block). So a
checkpoint saved mid-block keeps the state as it was before that batch (``regenerated``), and the batch is
counted once, as in the uninterrupted run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rlaif.errors import RlaifError

if TYPE_CHECKING:  # pragma: no cover
    from rlaif.config import RewardWeights
    from rlaif.judges.reward import JudgeReward

RewardFn = Callable[[list[str], list[str]], list[float]]
JUDGE_STATE = "judge_reward_state.json"  # in a trainer checkpoint folder: each process's running-mean state
log = logging.getLogger(__name__)


def _done(value) -> concurrent.futures.Future:
    f: concurrent.futures.Future = concurrent.futures.Future()
    f.set_result(value)
    return f


def start_reward(fn, prompts: list[str], responses: list[str]):
    """Start scoring a batch; ``.result()`` gives ``(scores, stats)``. A reward with a ``start``
    method (the judge, a weighted sum) puts its calls in flight; a plain callable runs now."""
    if hasattr(fn, "start"):
        return fn.start(prompts, responses)
    return _done(([float(s) for s in fn(prompts, responses)], {}))


class _Pending:
    def __init__(self, reward: MixedReward, prompts: list[str], responses: list[str]):
        self.reward, self.prompts, self.responses = reward, prompts, responses
        self.judge = reward.judge.start(prompts, responses) if reward.judge is not None else None

    def result(self) -> tuple[list[float], dict]:
        w = self.reward.weights
        total = [0.0] * len(self.responses)
        stats: dict = {}
        if self.reward.rm is not None:  # scored while the judge's calls are in flight
            rm = [float(s) for s in self.reward.rm(self.prompts, self.responses)]
            total = [t + w.reward_model * s for t, s in zip(total, rm)]
            stats["rm_reward"] = sum(rm) / len(rm) if rm else 0.0
        if self.judge is not None:
            judged, jstats = self.judge.result()
            total = [t + w.judge * s for t, s in zip(total, judged)]
            stats.update(jstats)
        return total, stats


class MixedReward:
    """``w_rm * rm(prompts, responses) + w_judge * judge`` for PPO (either part may be absent)."""

    def __init__(self, weights: RewardWeights, rm: RewardFn | None, judge: JudgeReward | None):
        if (rm is None) == weights.uses_reward_model or (judge is None) == weights.uses_judge:
            raise ValueError("MixedReward: give a reward model / judge exactly for the sources with a weight")
        self.weights, self.rm, self.judge = weights, rm, judge

    def start(self, prompts: list[str], responses: list[str]) -> _Pending:
        return _Pending(self, list(prompts), list(responses))

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        return self.start(prompts, responses).result()[0]


def combine(weights: RewardWeights, rm: RewardFn | None, judge: JudgeReward | None):
    """PPO's reward function for ``policy_training.reward``: the reward model's own ``score``
    when it is the only source (today's behaviour), else a ``MixedReward``."""
    if not weights.uses_judge:
        return rm
    return MixedReward(weights, rm if weights.uses_reward_model else None, judge)


# ------------------------------------------------------------------ trl (RLOO / GRPO)
def completion_text(c) -> str:
    return (c if isinstance(c, str) else c[-1]["content"]).strip()


class JudgeRewardFn:
    """trl's async reward function around a ``JudgeReward``: trl awaits it on its own event loop
    while the judge's worker makes the batch's calls."""

    __name__ = "judge"

    def __init__(self, judge: JudgeReward):
        self.judge = judge

    async def __call__(self, prompts, completions, raw_prompt=None, log_metric=None, **_):
        texts = [completion_text(c) for c in completions]
        rewards, stats = await asyncio.wrap_future(self.judge.start(list(raw_prompt or prompts), texts))
        if log_metric is not None:
            for k in ("judge_calls", "judge_cache_hits", "judge_unscored"):
                log_metric("judge/" + k.removeprefix("judge_"), stats[k])
        return rewards


def ends_in_eos(ids, eos_token_id: int | list[int] | None) -> bool:
    """Whether a completion's ids end in an EOS (``eos_token_id``: one id or the stop set, rlaif.train.hf)."""
    eos = (eos_token_id,) if isinstance(eos_token_id, int) else tuple(eos_token_id or ())
    return bool(ids) and ids[-1] in eos


class MissingEOSPenalty:
    """``-penalty`` for a completion that did not end in EOS, 0 otherwise (a reward function)."""

    __name__ = "missing_eos"

    def __init__(self, eos_token_id: int | list[int] | None, penalty: float):
        self.eos_token_id, self.penalty = eos_token_id, penalty

    def __call__(self, prompts, completions, completion_ids=None, **_):
        if completion_ids is None:
            return [0.0] * len(completions)
        return [0.0 if ends_in_eos(ids, self.eos_token_id) else -self.penalty for ids in completion_ids]


def trl_reward_funcs(weights: RewardWeights, rm_fn, judge: JudgeReward | None, eos_token_id: int | list[int] | None,
                     missing_eos_penalty: float | None) -> tuple[list, list[float] | None]:
    """trl's ``reward_funcs`` and ``reward_weights`` for ``policy_training.reward``. ``rm_fn``:
    ``ScoreReward`` of the reward model (it carries the EOS penalty when it is the only source)."""
    from rlaif.train.online import ScoreReward

    if not weights.uses_judge:
        return [ScoreReward(rm_fn, eos_token_id, missing_eos_penalty)], None
    funcs, ws = [], []
    if weights.uses_reward_model:
        funcs.append(ScoreReward(rm_fn))
        ws.append(weights.reward_model)
    funcs.append(JudgeRewardFn(judge))
    ws.append(weights.judge)
    if missing_eos_penalty is not None:
        funcs.append(MissingEOSPenalty(eos_token_id, missing_eos_penalty))
        ws.append(1.0)
    return funcs, ws


# ------------------------------------------------------------------ the judge's running mean in checkpoints
def judge_of(reward) -> JudgeReward | None:
    """The judge inside a PPO reward function (the judge itself or a ``MixedReward``'s); None without one."""
    from rlaif.judges.reward import JudgeReward

    if isinstance(reward, JudgeReward):
        return reward
    return reward.judge if isinstance(reward, MixedReward) else None


def save_judge_state(reward, folder: Path, accelerator, before_latest: bool = False) -> None:
    """Every process's running-mean state of the judge in ``reward`` (``judge_of``; nothing without one) into
    ``folder``, written whole by the main process (``before_latest``: as it was before each process's latest
    batch, which the resumed run scores again). A collective: every process calls it."""
    from accelerate.utils import gather_object

    from rlaif.outputs import write_whole

    judge = judge_of(reward)
    if judge is None:
        return
    states = gather_object([judge.running_state(before_latest)])
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        write_whole(folder / JUDGE_STATE, json.dumps({"processes": states}))


def _read_states(path: Path) -> list[dict]:
    from rlaif import safeio

    try:
        data = safeio.loads_bounded(safeio.read_text(path, "judge reward state", 1 << 20), str(path))
        states = data["processes"]
        ok = isinstance(states, list) and states and all(  # a JSON true is no count or sum
            isinstance(st, dict) and type(st.get("scored_n")) is int and st["scored_n"] >= 0
            and type(st.get("scored_sum")) in (int, float) and math.isfinite(st["scored_sum"]) for st in states)
    except (ValueError, TypeError, KeyError, RlaifError):  # RlaifError: too large, not UTF-8, nested too deep
        ok = False
    if not ok:
        raise RlaifError(f"{path}: not a judge reward state (processes: a list of scored_sum, scored_n); delete "
                         f"the checkpoint folder {path.parent} to train from the previous one or the start")
    return states


def restore_judge_state(reward, checkpoint: str | Path, process_index: int, num_processes: int) -> None:
    """A resumed run's judge (in ``reward``, ``judge_of``; nothing without one) continues the running mean
    saved in ``checkpoint``: this process's own when the run has as many processes as the saved one, else
    the pooled mean of all of them."""
    judge = judge_of(reward)
    if judge is None:
        return
    path = Path(checkpoint) / JUDGE_STATE
    if not path.exists():
        log.warning("%s has no judge reward state (saved by an older rlaif): the running mean of the judge "
                    "reward starts again from this step", checkpoint)
        return
    states = _read_states(path)
    if len(states) == num_processes:
        judge.restore_running_state(states[process_index])
    else:
        judge.restore_running_state({"scored_sum": sum(st["scored_sum"] for st in states),
                                     "scored_n": sum(st["scored_n"] for st in states)})


def regenerated_on_resume(trainer) -> bool:
    """Whether trl's RLOO/GRPO ``trainer``, resumed from a checkpoint saved now, generates and scores its buffered
    batch again: the save falls inside a block of steps trained on one generation (see the module docstring).
    Reads trl's own counters (``_step``, incremented before ``on_step_end``; ``steps_per_generation``,
    ``num_iterations``): trl keeps no public name for them."""
    return trainer._step % (trainer.args.steps_per_generation * trainer.num_iterations) != 0


def judge_state_callback(judge: JudgeReward, accelerator, regenerated=None):
    """A transformers ``TrainerCallback`` that writes the judge's running-mean state into each checkpoint of a
    trl trainer: at the end of a step whose save is due (``control.should_save``, set by transformers'
    ``DefaultFlowCallback``, which runs first), so before the checkpoint's own files. ``regenerated()``: True
    when a resume from this save scores the latest batch again (``regenerated_on_resume``): the state before
    it is saved."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class JudgeStateCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save:  # the folder transformers saves this step's checkpoint in
                save_judge_state(judge, Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}", accelerator,
                                 regenerated is not None and regenerated())

    return JudgeStateCallback()
