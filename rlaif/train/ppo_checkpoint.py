"""PPO's checkpoints (a mixin of rlaif.train.ppo.PPOTrainer): save every ``train.save_steps`` iterations into a
temporary folder renamed into place, resume from the newest one made with the same settings."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from rlaif.train.rewards import restore_judge_state, save_judge_state

log = logging.getLogger("rlaif.train.ppo")


class PPOCheckpoints:
    """The policy+critic, optimizer, scheduler and RNG states (``accelerate``'s ``save_state``), the step, the KL
    coefficient, the reward normalisation and the judge reward's running mean."""

    def _checkpoints(self) -> list[tuple[int, Path]]:
        if not self.ckpt_root.exists():
            return []
        out = []
        for d in self.ckpt_root.iterdir():
            if d.name.startswith("step-") and d.name[5:].isdigit() and (d / "ppo_state.json").exists():
                out.append((int(d.name[5:]), d))
        return sorted(out)

    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        final = self.ckpt_root / f"step-{self.step}"
        tmp = self.ckpt_root / f"step-{self.step}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            self.ckpt_root.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=False)
        save_judge_state(self.reward_fn, tmp, acc)  # the judge reward's running mean (none without a judge)
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {"fingerprint": self.fingerprint, "step": self.step, "kl_coef": self.kl_ctl.value,
                     "reward_mean": self.reward_mean,
                     "reward_std": self.reward_std, "total_steps": self.total_steps, "history": self.history}
            (tmp / "ppo_state.json").write_text(json.dumps(state))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for s, d in self._checkpoints():
                if s != self.step:
                    shutil.rmtree(d, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def maybe_resume(self) -> int | None:
        ckpts = self._checkpoints()
        if not ckpts:
            return None
        step, d = ckpts[-1]
        state = json.loads((d / "ppo_state.json").read_text())
        if state.get("fingerprint") != self.fingerprint:
            log.warning("ignoring PPO checkpoint %s: made with other settings, prompts or processes", d)
            self.accelerator.wait_for_everyone()
            if self.accelerator.is_main_process:
                for _, old in ckpts:
                    shutil.rmtree(old, ignore_errors=True)
            self.accelerator.wait_for_everyone()
            return None
        self.accelerator.load_state(str(d))
        self.step = state["step"]
        self.kl_ctl.value = state["kl_coef"]
        self.reward_mean, self.reward_std = state["reward_mean"], state["reward_std"]
        self.history = state["history"]
        restore_judge_state(self.reward_fn, d, self.accelerator.process_index, self.accelerator.num_processes)
        self.resumed_from = self.step
        return self.step
