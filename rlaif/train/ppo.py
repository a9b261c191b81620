"""PPO of the SFT policy against the trained reward model and/or the judge (rlaif's own: trl 1.16 has no PPOTrainer).

One iteration ("step"):

1. rollout: ``ppo.rollout_batch_size`` train prompts (the chat template, ``rlaif.chat``; left-padded,
   left-truncated) are sampled from the current policy, ``ppo.max_new_tokens`` at most;
2. score: the reward (``policy_training.reward``, rlaif/train/rewards.py: the trained reward model
   through ``RewardScorer``, the judge, or a weighted sum; the judge's calls are in flight during
   the forward passes below) scores each (prompt, response) once, at the response's last token;
   every response token also gets ``-kl_coef * KL_t`` to the frozen reference (the SFT policy);
3. advantages: GAE over the response tokens from a separate critic, whitened;
4. ``ppo.ppo_epochs`` passes of shuffled mini-batches with the clipped policy loss and the
   clipped value loss, one AdamW optimizer over policy and critic.

**Value model.** A separate critic: the SFT policy's transformer (``AutoModel`` from the SFT
checkpoint) plus a new scalar head, trained with its own (value) loss only. It is not initialised
from the reward model because the default reward model (MiniLM, WordPiece) does not share the
policy's tokenizer, so it cannot give one value per *policy* token. A value head on the policy's
own trunk was rejected because its loss would move the policy even when the policy loss is zero
(then a huge KL coefficient would no longer pin the policy to the reference).

**Implementation details** (Huang et al., 2024, "The N+ Implementation Details of RLHF with PPO:
A Case Study on TL;DR Summarization", and the 2023 lm-human-preferences write-up), implemented here:

- prompts left-padded, responses right-padded; position ids from the attention mask, so a
  left-padded prompt is scored as if unpadded;
- sampling from the full distribution (top_k=0, top_p=1) at ``temperature``, and the logits
  divided by the same temperature whenever log-probabilities are computed in training;
- the response ends at the first EOS (tokens after it are masked out of every loss);
- EOS trick: a response with no EOS gets ``missing_eos_penalty`` subtracted from its score;
- reward normalisation: RM scores are shifted and scaled to mean 0, std 1 on the *initial*
  policy's first rollout (gain and bias fixed for the rest of the run, checkpointed);
- per-token KL penalty (k1 = log pi - log pi_ref by default, k3 optional) in the reward,
  score added at the last response token;
- fixed KL coefficient, or the adaptive controller of Ziegler et al. (``target_kl``);
- optional reward whitening (scale only, ``whiten_rewards``);
- GAE (``gamma``, ``lam``) and advantage whitening (statistics over all processes);
- clipped surrogate policy loss and clipped value loss (``cliprange``, ``cliprange_value``);
- several PPO epochs per rollout batch over shuffled mini-batches;
- dropout disabled in policy, critic and reference (so rollout and training log-probs agree);
- value head initialised N(0, 1/sqrt(d+1)), bias 0 (the paper's reward-head init);
- Adam epsilon 1e-5, gradient-norm clipping, learning rate annealed linearly to 0;
- resumable: every ``train.save_steps`` iterations the policy+critic, optimizer, scheduler, RNG
  states (through ``accelerate``'s ``save_state``), the step, the KL coefficient, the reward
  normalisation and the judge reward's running mean are checkpointed; a killed run resumes from the last one.

Not implemented: a value model initialised from the reward model (see above), reward-model
normalisation on SFT *demonstrations* (the initial policy's samples are used instead), and the
paper's null-token/truncation on a specific non-EOS token.

Scale-out: the loop runs through ``accelerate`` (one process, DDP, or DeepSpeed ZeRO-2/3 without
LoRA); each process samples its own ``rollout_batch_size`` prompts and only the main process
writes the final model. FSDP is not supported for PPO (generation from a sharded module).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rlaif.chat import encode_policy_inputs
from rlaif.errors import RlaifError
from rlaif.layout import checkpoints_dir, finalize_dir, partial_dir
from rlaif.train.gpu import lora_config, model_load_kwargs, resolve_bf16
from rlaif.train.hf import generation_lengths, load_tokenizer, merged, position_ids_from_mask, stop_token_ids
from rlaif.train.ppo_checkpoint import PPOCheckpoints
from rlaif.train.ppo_losses import (  # noqa: F401  (re-exported: the tests and docs use rlaif.train.ppo.*)
    AdaptiveKLController,
    FixedKLController,
    compute_gae,
    entropy_from_logits,
    kl_penalty,
    masked_mean,
    masked_whiten,
    per_token_rewards,
    policy_loss,
    value_loss,
)
from rlaif.train.ppo_model import (
    Rollout,
    disable_dropout,
    policy_and_value_cls,
    response_ends,
    value_head_module,
)
from rlaif.train.rewards import start_reward

if TYPE_CHECKING:  # pragma: no cover

    from rlaif.config import PolicyTrainingConfig
    from rlaif.layout import RunLayout

log = logging.getLogger(__name__)

RewardFn = Callable[[list[str], list[str]], list[float]]
"""``reward_fn(prompts, responses) -> scores``: raw prompts (not formatted), decoded responses."""


class PPOTrainer(PPOCheckpoints):
    """PPO on ``policy_dir`` (a causal LM + tokenizer) with ``reward_fn``; see the module docstring."""

    def __init__(self, policy_dir: str | Path, reward_fn: RewardFn, prompts: list[str], pcfg: PolicyTrainingConfig,
                 ckpt_root: str | Path, seed: int = 0, device: str = "cpu", reward_fn_factory=None,
                 ref_dir: str | Path | None = None):
        import torch
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from transformers import AutoModel, AutoModelForCausalLM

        if not prompts:
            raise RlaifError("PPO needs training prompts; data.prompts has none in the train split")
        self.pcfg, self.ppo, self.targs = pcfg, pcfg.ppo, pcfg.train
        self.prompts, self.seed = list(prompts), seed
        self.ckpt_root = Path(ckpt_root)
        # A trainer run earlier in this process (SFT, RM) leaves its accelerate state behind; start clean,
        # as transformers' TrainingArguments does.
        AcceleratorState._reset_state(reset_partial_state=True)
        bf16 = resolve_bf16(pcfg, device)
        # The LR schedule counts PPO iterations (stepped once each), not per-process optimizer steps.
        self.accelerator = acc = Accelerator(cpu=(device == "cpu"), mixed_precision="bf16" if bf16 else "no",
                                             step_scheduler_with_optimizer=False)
        if acc.distributed_type.value == "FSDP":
            raise RlaifError("PPO runs under DDP or DeepSpeed (configs/accelerate/ddp.yaml, zero3.yaml), not FSDP")
        self.zero3 = acc.state.deepspeed_plugin is not None and acc.state.deepspeed_plugin.zero_stage == 3
        if self.zero3 and pcfg.lora is not None:
            raise RlaifError("PPO with policy_training.lora runs on one GPU or under DDP, not DeepSpeed ZeRO-3")
        if acc.state.deepspeed_plugin is not None:
            acc.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = self.ppo.mini_batch_size
        self.device = acc.device
        self.reward_fn = reward_fn if reward_fn is not None else reward_fn_factory(str(acc.device))

        self.tokenizer = tok = load_tokenizer(policy_dir, padding_side="left")
        tok.truncation_side = "left"
        kw = model_load_kwargs(pcfg, device, bf16, acc.num_processes > 1)
        policy = AutoModelForCausalLM.from_pretrained(str(policy_dir), **kw)
        critic = AutoModel.from_pretrained(str(policy_dir), **kw)
        self.ref = None  # with LoRA and no ref_dir: the base model with the adapters off
        if pcfg.lora is not None:
            policy_lora, critic_lora = lora_config(pcfg.lora, causal=True), lora_config(pcfg.lora, causal=False)
            from peft import get_peft_model

            policy = get_peft_model(policy, policy_lora)
            critic = get_peft_model(critic, critic_lora)
        if pcfg.lora is None or ref_dir is not None:
            ref_kw = model_load_kwargs(pcfg, device, bf16, acc.num_processes > 1, trainable=False)
            self.ref = AutoModelForCausalLM.from_pretrained(str(ref_dir or policy_dir), **ref_kw)
            self.ref.requires_grad_(False)
            disable_dropout(self.ref)
            self.ref.eval()
            if "device_map" not in kw:
                self.ref.to(self.device)
        if pcfg.gradient_checkpointing:
            for m in (policy, critic):
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                if pcfg.lora is not None:
                    m.enable_input_require_grads()
        hidden = critic.config.get_text_config().hidden_size
        torch.manual_seed(seed)
        head = value_head_module(hidden)
        model = policy_and_value_cls()(policy, critic, head)
        disable_dropout(model)
        self.stop_ids, self.pad_id = stop_token_ids(policy, tok), tok.pad_token_id
        lr = self.targs.learning_rate
        groups = [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": lr},
                  {"params": [p for p in (*critic.parameters(), *head.parameters()) if p.requires_grad],
                   "lr": self.ppo.vf_learning_rate or lr}]
        opt = torch.optim.AdamW(groups, lr=lr, eps=1e-5, weight_decay=0.0)
        n_proc = acc.num_processes
        self.total_steps = self.ppo.steps or (self.targs.max_steps if self.targs.max_steps > 0 else max(
            1, math.ceil(self.targs.epochs * len(self.prompts) / (self.ppo.rollout_batch_size * n_proc))))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / self.total_steps))
        self.model, self.optimizer, self.scheduler = acc.prepare(model, opt, sched)
        self.kl_ctl = (AdaptiveKLController(self.ppo.kl_coef, self.ppo.target_kl, self.ppo.kl_horizon)
                       if self.ppo.target_kl else FixedKLController(self.ppo.kl_coef))
        self.step = 0
        self.reward_mean: float | None = None
        self.reward_std: float | None = None
        self.history: list[dict] = []
        self.resumed_from: int | None = None
        # A checkpoint is resumed only by the same training (settings, prompts, seed, processes, policy).
        from rlaif.hashing import content_hash

        self.fingerprint = content_hash({"pcfg": pcfg.hash_view(), "prompts": self.prompts, "seed": seed,
                                         "processes": acc.num_processes, "policy": str(Path(policy_dir).resolve())})
        self.max_prompt, self.max_new = generation_lengths(policy.config, self.ppo.max_new_tokens,
                                                           self.targs.max_length)

    # ------------------------------------------------------------ helpers
    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def _reduce_sum(self, t):
        return self.accelerator.reduce(t, reduction="sum") if self.accelerator.num_processes > 1 else t

    def _mean_all(self, value: float) -> float:
        import torch

        if self.accelerator.num_processes == 1:
            return float(value)
        t = torch.tensor([float(value)], device=self.device)
        return float(self.accelerator.reduce(t, reduction="mean"))

    def batch_prompts(self, step: int) -> list[str]:
        """This process's prompts for ``step``: epoch-wise shuffles seeded by (seed, epoch), so a resumed
        run continues with the same prompts."""
        import torch

        n, bs = len(self.prompts), self.ppo.rollout_batch_size
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        start = step * bs * world + rank * bs
        out, perms = [], {}
        for pos in range(start, start + bs):
            epoch, i = divmod(pos, n)
            if epoch not in perms:
                perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
            out.append(self.prompts[int(perms[epoch][i])])
        return out

    def _forward_logprobs(self, model, input_ids, attention_mask, R: int, with_values: bool):
        """(logprobs [B,R], entropy [B,R], values [B,R] or None) of the response tokens, in mini-batches."""
        import torch

        lps, ents, vals = [], [], []
        T = self.ppo.temperature
        for i in range(0, len(input_ids), self.ppo.mini_batch_size):
            ids, am = input_ids[i:i + self.ppo.mini_batch_size], attention_mask[i:i + self.ppo.mini_batch_size]
            if with_values:
                logits, v = model(ids, am, R + 1)
                vals.append(v[:, :-1].float())
            else:
                logits = model(input_ids=ids, attention_mask=am, position_ids=position_ids_from_mask(am), logits_to_keep=R + 1,
                               use_cache=False).logits
            logits = logits[:, :-1].float() / T
            lp = torch.log_softmax(logits, -1).gather(-1, ids[:, -R:].unsqueeze(-1)).squeeze(-1)
            lps.append(lp)
            ents.append(entropy_from_logits(logits))
        return torch.cat(lps), torch.cat(ents), (torch.cat(vals) if with_values else None)

    def _generate(self, enc):
        import contextlib

        import torch

        model = self.unwrapped
        ctx = contextlib.nullcontext()
        if self.zero3:
            import deepspeed

            ctx = deepspeed.zero.GatheredParameters(list(model.policy.parameters()))
        gc = self.pcfg.gradient_checkpointing
        with ctx, torch.no_grad(), self.accelerator.autocast():
            if gc:
                model.policy.gradient_checkpointing_disable()
            try:
                return model.policy.generate(
                    **enc, do_sample=True, temperature=self.ppo.temperature, top_k=0, top_p=1.0,
                    max_new_tokens=self.max_new, pad_token_id=self.pad_id, eos_token_id=self.stop_ids,
                    use_cache=True)
            finally:
                if gc:
                    model.policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # ------------------------------------------------------------ rollout
    def rollout(self, prompts: list[str]) -> Rollout:
        import torch

        ppo = self.ppo
        tok = self.tokenizer
        enc = encode_policy_inputs(tok, prompts, return_tensors="pt", padding=True, truncation=True,
                                   max_length=self.max_prompt).to(self.device)
        model = self.unwrapped
        model.eval()
        out = self._generate(enc)
        P = enc["input_ids"].shape[1]
        response = out[:, P:]
        R = response.shape[1]
        lengths, has_eos = response_ends(response, self.stop_ids)
        mask = (torch.arange(R, device=self.device)[None] < lengths[:, None]).long()
        response = torch.where(mask.bool(), response, torch.full_like(response, self.pad_id))
        input_ids = torch.cat([enc["input_ids"], response], 1)
        attention_mask = torch.cat([enc["attention_mask"], mask], 1)
        texts = [tok.decode(r[:n - (1 if e else 0)], skip_special_tokens=True).strip()
                 for r, n, e in zip(response.tolist(), lengths.tolist(), has_eos.tolist())]
        fmask = mask.float()
        pending = start_reward(self.reward_fn, prompts, texts)  # a judge's calls go out now, answered meanwhile
        with torch.no_grad():
            logprobs, entropy, values = self._forward_logprobs(model, input_ids, attention_mask, R, True)
            if self.ref is not None:
                ref_lp, _, _ = self._forward_logprobs(self.ref, input_ids, attention_mask, R, False)
            else:  # LoRA: the reference is the base model, adapters off
                with model.policy.disable_adapter():
                    ref_lp, _, _ = self._forward_logprobs(model.policy, input_ids, attention_mask, R, False)
        raw_scores, reward_stats = pending.result()
        raw = torch.tensor(raw_scores, device=self.device)
        if ppo.normalize_reward and self.reward_mean is None:
            all_raw = self.accelerator.gather(raw) if self.accelerator.num_processes > 1 else raw
            self.reward_mean = float(all_raw.mean())
            std = float(all_raw.std()) if len(all_raw) > 1 else 0.0
            self.reward_std = std if std > 1e-6 else 1.0
        scores = (raw - self.reward_mean) / self.reward_std if ppo.normalize_reward else raw.clone()
        if ppo.missing_eos_penalty is not None:
            scores = scores - ppo.missing_eos_penalty * (~has_eos).float()
        kl = kl_penalty(logprobs, ref_lp, ppo.kl_estimator) * fmask
        rewards = per_token_rewards(scores, kl, fmask, self.kl_ctl.value)
        if ppo.whiten_rewards:
            rewards = masked_whiten(rewards, fmask, shift_mean=False, reduce=self._reduce_sum)
        adv, returns = compute_gae(rewards, values, fmask, ppo.gamma, ppo.lam)
        adv = masked_whiten(adv, fmask, reduce=self._reduce_sum)
        seq_kl = kl.sum(1)
        stats = {"reward": raw.mean().item(), "score": scores.mean().item(), "kl": seq_kl.mean().item(),
                 "non_score_reward": (-self.kl_ctl.value * seq_kl).mean().item(),
                 "entropy": masked_mean(entropy, fmask).item(), "response_length": lengths.float().mean().item(),
                 "eos_fraction": has_eos.float().mean().item(), "kl_coef": self.kl_ctl.value,
                 "tokens": float(attention_mask.sum()), **reward_stats}
        return Rollout(prompts, texts, input_ids, attention_mask, fmask, logprobs, values, adv, returns, stats)

    # ------------------------------------------------------------ optimisation
    def optimize(self, ro: Rollout) -> dict:
        import torch

        ppo, acc = self.ppo, self.accelerator
        self.model.train()
        R = ro.mask.shape[1]
        B = len(ro.prompts)
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "clipfrac": 0.0, "value_clipfrac": 0.0, "approx_kl": 0.0,
                "loss": 0.0}
        n = 0
        for _ in range(ppo.ppo_epochs):
            perm = torch.randperm(B)
            for i in range(0, B, ppo.mini_batch_size):
                idx = perm[i:i + ppo.mini_batch_size].to(self.device)
                logits, vpred = self.model(ro.input_ids[idx], ro.attention_mask[idx], R + 1)
                logits = logits[:, :-1].float() / ppo.temperature
                vpred = vpred[:, :-1].float()
                lp = torch.log_softmax(logits, -1).gather(-1, ro.input_ids[idx][:, -R:].unsqueeze(-1)).squeeze(-1)
                m = ro.mask[idx]
                pg, clipfrac, approx_kl = policy_loss(lp, ro.logprobs[idx], ro.advantages[idx], m, ppo.cliprange)
                vf, vf_clip = value_loss(vpred, ro.values[idx], ro.returns[idx], m, ppo.cliprange_value)
                loss = pg + ppo.vf_coef * vf
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(self.model.parameters(), ppo.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
                for k, v in (("policy_loss", pg), ("value_loss", vf), ("clipfrac", clipfrac),
                             ("value_clipfrac", vf_clip), ("approx_kl", approx_kl), ("loss", loss)):
                    sums[k] += float(v.detach())
                n += 1
        self.scheduler.step()
        return {k: v / max(1, n) for k, v in sums.items()}

    # ------------------------------------------------------------ loop
    def train(self, progress: str | None = "train-policy (ppo)") -> list[dict]:
        import contextlib

        from rlaif.progress import task

        self.maybe_resume()
        acc = self.accelerator
        cm = task(progress, self.total_steps) if (progress and acc.is_main_process) else contextlib.nullcontext()
        with cm as advance:
            if advance:
                advance(self.step)
            while self.step < self.total_steps:
                t0 = time.perf_counter()
                ro = self.rollout(self.batch_prompts(self.step))
                t1 = time.perf_counter()
                opt_stats = self.optimize(ro)
                stats = {k: self._mean_all(v) for k, v in {**ro.stats, **opt_stats}.items()}
                stats["rollout_seconds"] = t1 - t0
                self.kl_ctl.update(stats["kl"], self.ppo.rollout_batch_size * acc.num_processes)
                self.step += 1
                stats.update(step=self.step, learning_rate=self.scheduler.get_last_lr()[0],
                             seconds=time.perf_counter() - t0)
                self.history.append(stats)
                if advance:
                    advance(1, info=f"reward {stats['reward']:.3f} kl {stats['kl']:.3f}")
                if self.step % self.targs.save_steps == 0 and self.step < self.total_steps:
                    self.save_checkpoint()
        return self.history

    def save_policy(self, out: str | Path) -> None:
        """The trained policy as a plain causal LM (LoRA merged) + tokenizer; written by the main process."""
        acc = self.accelerator
        acc.wait_for_everyone()
        state = acc.get_state_dict(self.model) if self.zero3 else None
        if acc.is_main_process:
            policy = merged(self.unwrapped.policy)
            out = Path(out)
            if state is not None:
                sd = {k[len("policy."):]: v for k, v in state.items() if k.startswith("policy.")}
                policy.save_pretrained(str(out), state_dict=sd)
            else:
                policy.save_pretrained(str(out))
            self.tokenizer.padding_side, self.tokenizer.truncation_side = "right", "right"
            self.tokenizer.save_pretrained(str(out))
        acc.wait_for_everyone()


def run_ppo(policy_dir: str | Path, reward_fn: RewardFn | None, prompts: list[str], pcfg: PolicyTrainingConfig,
            out_dir: str | Path, seed: int = 0, device: str = "cpu", reward_fn_factory=None,
            progress: str | None = "train-policy (ppo)", ref_dir: str | Path | None = None) -> dict:
    """Train with PPO and write the policy to ``out_dir`` (whole or not at all); resume from
    ``out_dir``'s work folder (rlaif.layout.checkpoints_dir) if a killed run left one. Returns figures
    and the per-step history."""
    out_dir = Path(out_dir)
    work = partial_dir(out_dir)
    trainer = PPOTrainer(policy_dir, reward_fn, prompts, pcfg, checkpoints_dir(out_dir), seed, device,
                         reward_fn_factory, ref_dir)
    history = trainer.train(progress)
    trainer.save_policy(work / "model")
    if trainer.accelerator.is_main_process:
        finalize_dir(work / "model", out_dir)
        shutil.rmtree(work, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    first, last = (history[0], history[-1]) if history else ({}, {})
    return {"algorithm": "ppo", "train_prompts": len(prompts), "steps": trainer.step,
            "resumed_from_step": trainer.resumed_from, "reward_first": first.get("reward"),
            "reward_last": last.get("reward"), "kl_last": last.get("kl"),
            "reward_normalisation": {"mean": trainer.reward_mean, "std": trainer.reward_std},
            "history": history}


def train_ppo(pcfg: PolicyTrainingConfig, seed: int, layout: RunLayout, prompts: list[str],
              rm_max_length: int, device: str, judge=None, ref_dir=None) -> dict:
    """The pipeline's PPO: policy from ``layout.sft`` (reference: itself, or ``ref_dir``), rewarded as
    ``policy_training.reward`` says
    (rlaif/train/rewards.py): the trained reward model in ``layout.reward_model`` (scoring
    ``rm_max_length`` tokens), the judge reward ``judge``, or both; written to ``layout.policy``."""
    from rlaif.train.rewards import combine

    def factory(dev: str):
        rm = None
        if pcfg.reward.uses_reward_model:
            from rlaif.train.reward import RewardScorer

            rm = RewardScorer(layout.reward_model, dev, rm_max_length,
                              batch_size=max(8, pcfg.ppo.rollout_batch_size)).score
        return combine(pcfg.reward, rm, judge)

    return run_ppo(layout.sft, None, prompts, pcfg, layout.policy, seed, device, reward_fn_factory=factory,
                   ref_dir=ref_dir)
