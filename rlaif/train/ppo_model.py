"""The PPO trainer's models and rollout record (rlaif/train/ppo.py): the policy and critic in one
module, the critic's value head, where a sampled response
ends, dropout switched off."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


def value_head_module(hidden: int):
    import torch

    head = torch.nn.Linear(hidden, 1)
    torch.nn.init.normal_(head.weight, std=1.0 / math.sqrt(hidden + 1))
    torch.nn.init.zeros_(head.bias)
    return head


def policy_and_value_cls():
    import torch

    from rlaif.train.hf import position_ids_from_mask

    class PolicyAndValue(torch.nn.Module):
        """Policy and critic in one module, so one optimizer and one ``accelerator.prepare`` cover both."""

        def __init__(self, policy, critic, value_head):
            super().__init__()
            self.policy, self.critic, self.value_head = policy, critic, value_head

        def forward(self, input_ids, attention_mask, keep: int):
            pos = position_ids_from_mask(attention_mask)
            logits = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                                 logits_to_keep=keep, use_cache=False).logits
            hidden = self.critic(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                                 use_cache=False).last_hidden_state[:, -keep:]
            return logits, self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)

    return PolicyAndValue


def disable_dropout(model) -> None:
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


@dataclass
class Rollout:
    prompts: list[str]
    texts: list[str]
    input_ids: torch.Tensor       # [B, P + R] prompt (left-padded) + response (right-padded)
    attention_mask: torch.Tensor  # [B, P + R] 0 on padding and after the first EOS
    mask: torch.Tensor            # [B, R] response tokens up to and including the first EOS
    logprobs: torch.Tensor        # [B, R]
    values: torch.Tensor          # [B, R]
    advantages: torch.Tensor      # [B, R]
    returns: torch.Tensor         # [B, R]
    stats: dict


def response_ends(response, stop_ids: list[int]):
    """(length, has_eos) of each sampled row: a response ends at its first stop token (kept), else runs to the end."""
    import torch

    R = response.shape[1]
    is_eos = torch.isin(response, torch.tensor(stop_ids, device=response.device))
    has_eos = is_eos.any(1)
    first = torch.where(has_eos, is_eos.float().argmax(1), torch.full_like(has_eos, R, dtype=torch.long))
    return torch.where(has_eos, first + 1, first), has_eos
