"""The base of every config section (no other rlaif imports: config.py, config_training.py and constitution.py share it)."""

from __future__ import annotations

import types
import typing
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError


def _numeric(annotation) -> bool:
    """An int or float field (possibly optional or in a union with other types), not a bool one."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        return bool not in args and any(a in (int, float) for a in args)
    return False


def no_bool(v):
    """A before-validator for a number field: YAML's true/false, which pydantic reads as 1/0, is refused."""
    if isinstance(v, bool):
        raise PydanticCustomError("bool_number", "expected a number, got {got}", {"got": str(v).lower()})
    return v


class NoBoolNumbers(BaseModel):
    """A model whose int and float fields refuse true/false (``rounds: true`` ran one round)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v, info: ValidationInfo):
        return no_bool(v) if info.field_name and _numeric(cls.model_fields[info.field_name].annotation) else v


class _Section(NoBoolNumbers):
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


def gradient_checkpointing_field():
    """``policy.gradient_checkpointing`` and ``reward_model.gradient_checkpointing``: a speed/memory knob (their
    stages' input hashes take it only when on: ``config_models.gc_default``)."""
    return Field(False, description="recompute activations in the backward pass: less memory, about a third more "
                                    "compute; for a model that does not fit otherwise (trl defaults it on; rlaif off)")


SystemRole = Literal["system", "fold"]


def system_role_field(who: str):
    """``judge.system_role`` and ``generate.served.system_role``: one meaning (rlaif.chat.served_messages)."""
    return Field("system", description=f"how {who} gets a system message: system (as one) | fold (its text starts "
                                       "the first user turn: for a chat template with no system role, e.g. Gemma's, "
                                       "whose server answers HTTP 400)")
