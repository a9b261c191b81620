"""The model sections of the pipeline config: ``policy`` (the tiny model's shape, SFT) and ``reward_model``
(split from rlaif/config.py, which re-exports every name here)."""

from __future__ import annotations

from pydantic import Field, model_validator

from rlaif.config_base import TrainArgs, _Section, gradient_checkpointing_field


def gc_default(section) -> set[str]:
    """``{"gradient_checkpointing"}`` when it is off (the default): left out of the hash. It changes no maths, but
    it can change the dropout random stream (the MiniLM reward model's weights differ by up to 0.085 after 12
    steps; the tiny GPT-2's are bitwise the same), so turning it on re-trains."""
    return set() if section.gradient_checkpointing else {"gradient_checkpointing"}


class TinyModel(_Section):
    """Shape of the locally built GPT-2-style policy (``policy.model: tiny``)."""

    vocab_size: int = Field(2048, ge=300, le=1_000_000)
    n_layer: int = Field(2, ge=1, le=96)
    n_head: int = Field(4, ge=1, le=256)
    n_embd: int = Field(128, ge=8, le=16384)
    n_positions: int = Field(256, ge=32, le=65536)

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head}); "
                             "change one of them")
        return self


class PolicyConfig(_Section):
    model: str = Field("tiny", description="'tiny' builds a small GPT-2 locally; else a local path or hub id")
    sft_data: str | None = Field(None, description="JSONL of {prompt, response} for SFT; required for 'tiny'")
    tiny: TinyModel = TinyModel()
    sft: TrainArgs = TrainArgs(epochs=3, learning_rate=2e-3, batch_size=16, max_length=160)
    skip_sft: bool = Field(False, description="use policy.model as the SFT policy without further SFT")
    gradient_checkpointing: bool = gradient_checkpointing_field()

    def hash_view(self) -> dict:
        """What changes the SFT policy (``sft_data`` is hashed by content); gradient checkpointing only when on,
        so runs from before the key existed keep their hashes."""
        return self.model_dump(mode="json", exclude={"sft_data"} | gc_default(self))


class RewardModelConfig(_Section):
    base: str = Field("minilm", description="'minilm' (bundled encoder + scalar head) or a local path")
    train: TrainArgs = TrainArgs(epochs=2, learning_rate=5e-5, batch_size=16, max_length=192)
    gradient_checkpointing: bool = gradient_checkpointing_field()

    def hash_view(self) -> dict:
        """What changes the reward model; gradient checkpointing only when on (as ``PolicyConfig.hash_view``)."""
        return self.model_dump(exclude=gc_default(self))
