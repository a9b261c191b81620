"""GPU options shared by the policy trainers: bf16, LoRA (peft), device_map.

All lazily imported and unused on CPU (bf16 is always off there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlaif.errors import RlaifError

if TYPE_CHECKING:  # pragma: no cover
    from rlaif.config import PolicyTrainingConfig


def lora_config(lora, causal: bool = True):
    """A peft ``LoraConfig`` from ``policy_training.lora`` (peft imported here only)."""
    try:
        from peft import LoraConfig
    except ImportError:
        raise RlaifError("policy_training.lora needs the `peft` package: pip install peft") from None
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                      task_type="CAUSAL_LM" if causal else "FEATURE_EXTRACTION", bias="none")


def model_load_kwargs(pcfg: PolicyTrainingConfig, device: str, bf16: bool, distributed: bool,
                      trainable: bool = True) -> dict:
    """dtype / device_map for ``from_pretrained`` (device_map only on CUDA and a single process).

    Weights that are trained in full stay fp32 (bf16 is autocast: bf16 weights would lose small
    updates); frozen weights (reference, LoRA's base) load in bf16 when bf16 is on.
    """
    import torch

    half = bf16 and (not trainable or pcfg.lora is not None)
    kw: dict = {"dtype": torch.bfloat16 if half else torch.float32}
    if pcfg.device_map and device == "cuda":
        if distributed:
            raise RlaifError("policy_training.device_map spreads one process's models over its GPUs; it cannot be "
                             "combined with several processes (--num-processes > 1): unset it")
        kw["device_map"] = pcfg.device_map
    return kw


def resolve_bf16(pcfg: PolicyTrainingConfig, device: str) -> bool:
    import torch

    if device != "cuda":
        return False  # CPU: always fp32
    if pcfg.bf16 is None:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return pcfg.bf16
