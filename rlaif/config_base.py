"""The base of every config section (no other rlaif imports: config.py and config_training.py share it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    # inf/nan pass every gt/ge bound and crash later; refuse them everywhere.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TrainArgs(_Section):
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(256, ge=16)
    max_steps: int = Field(-1, description="> 0 overrides epochs")
    save_steps: int = Field(50, ge=1, description="checkpoint every N steps (resume after a kill)")
