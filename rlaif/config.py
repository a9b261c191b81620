"""Pipeline YAML -> typed config.

Defaults live here; the YAML file overrides them; ``--set key.sub=value``
overrides the YAML (values parsed as YAML scalars, so ``--set
generate.num_candidates=2`` is an int). Unknown keys are errors that name the
file, line and field. Relative paths in the YAML are resolved against the
YAML file's folder; relative paths given with ``--set`` against the current
directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlaif.errors import RlaifError
from rlaif.hashing import content_hash
from rlaif.yamlio import LoadedYaml, format_pydantic_errors, load_yaml


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TinyModel(_Section):
    """Shape of the locally built GPT-2-style policy (``policy.model: tiny``)."""

    vocab_size: int = Field(2048, ge=300)
    n_layer: int = Field(2, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=8)
    n_positions: int = Field(256, ge=32)


class TrainArgs(_Section):
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(256, ge=16)
    max_steps: int = Field(-1, description="> 0 overrides epochs")
    save_steps: int = Field(50, ge=1, description="checkpoint every N steps (resume after a kill)")


class PolicyConfig(_Section):
    model: str = Field("tiny", description="'tiny' builds a small GPT-2 locally; else a local path or hub id")
    sft_data: str | None = Field(None, description="JSONL of {prompt, response} for SFT; required for 'tiny'")
    tiny: TinyModel = TinyModel()
    sft: TrainArgs = TrainArgs(epochs=3, learning_rate=2e-3, batch_size=16, max_length=160)
    skip_sft: bool = Field(False, description="use policy.model as the SFT policy without further SFT")


class DataConfig(_Section):
    prompts: str = Field(..., description="JSONL of {id?, text, category?}")
    eval_fraction: float = Field(0.15, ge=0, lt=1, description="prompts held out for policy evaluation")
    max_prompts: int | None = Field(None, ge=1)


class GenerateConfig(_Section):
    num_candidates: int = Field(4, ge=2)
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    batch_size: int = Field(16, ge=1)


class JudgeConfig(_Section):
    backend: str = Field("embedding", description="registry key: see `rlaif.judges.BACKENDS`")
    model: str = Field("minilm", description="embedding backend: 'minilm' (bundled) or a local path")
    constitution: str = Field(..., description="path to a constitution YAML")
    pairs: Literal["best_worst", "all", "adjacent"] = "best_worst"
    temperature: float = Field(0.1, gt=0, description="score gap -> confidence: sigmoid(gap / temperature)")
    batch_size: int = Field(64, ge=1)


class MixConfig(_Section):
    human_labels: list[str] = Field(default_factory=list)
    min_confidence: float = Field(0.55, ge=0.5, le=1, description="drop AI pairs below this confidence")
    human_eval_fraction: float = Field(0.25, ge=0, lt=1, description="share of human labels held out for eval")
    human_weight: float = Field(1.0, gt=0, description="loss weight of a human pair relative to an AI pair (1.0)")
    max_ai_per_human: float | None = Field(
        None, gt=0, description="mix ratio: keep at most this many AI pairs per human train pair"
    )


class RewardModelConfig(_Section):
    base: str = Field("minilm", description="'minilm' (bundled encoder + scalar head) or a local path")
    train: TrainArgs = TrainArgs(epochs=2, learning_rate=5e-5, batch_size=16, max_length=192)


class PolicyTrainingConfig(_Section):
    algorithm: Literal["dpo"] = Field("dpo", description="dpo now; ppo/rloo/grpo come with issue #5")
    beta: float = Field(0.1, gt=0)
    train: TrainArgs = TrainArgs(epochs=2, learning_rate=5e-4, batch_size=16, max_length=160)


class EvalConfig(_Section):
    max_prompts: int = Field(64, ge=1)
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(0.7, gt=0)


class PipelineConfig(_Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    workdir: str | None = Field(None, description="run directory; default runs/<name>")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig
    policy: PolicyConfig = PolicyConfig()
    generate: GenerateConfig = GenerateConfig()
    judge: JudgeConfig
    mix: MixConfig = MixConfig()
    reward_model: RewardModelConfig = RewardModelConfig()
    policy_training: PolicyTrainingConfig = PolicyTrainingConfig()
    eval: EvalConfig = EvalConfig()

    # The file it came from (not part of the hash).
    source: str | None = Field(None, exclude=True)

    def section_hash(self, *names: str) -> str:
        return content_hash({n: getattr(self, n).model_dump(mode="json") for n in names} | {"seed": self.seed})

    @property
    def hash(self) -> str:
        return content_hash(self.model_dump(mode="json", exclude={"workdir", "source"}))


# Dotted names of fields that hold paths (resolved against the YAML's folder).
PATH_FIELDS = ("policy.sft_data", "data.prompts", "judge.constitution", "mix.human_labels[]", "workdir")
MODEL_FIELDS = ("policy.model", "judge.model", "reward_model.base")


def _get(d: dict, dotted: str):
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _resolve_paths(d: dict, base: Path, fields=PATH_FIELDS, only_keys: set[str] | None = None) -> None:
    def fix(v):
        if isinstance(v, str) and v and not Path(v).is_absolute():
            return str((base / v).resolve()) if not v.startswith("~") else str(Path(v).expanduser())
        return v

    for dotted in fields + tuple(f for f in MODEL_FIELDS):
        is_list = dotted.endswith("[]")
        key = dotted.rstrip("[]")
        if only_keys is not None and key not in only_keys:
            continue
        parent_key, _, leaf = key.rpartition(".")
        parent = _get(d, parent_key) if parent_key else d
        if not isinstance(parent, dict) or leaf not in parent:
            continue
        v = parent[leaf]
        if dotted in MODEL_FIELDS:
            # A model is a path only when it looks like one and exists there.
            if isinstance(v, str) and (v.startswith((".", "/", "~")) or (base / v).exists()) and v not in ("tiny", "minilm"):
                parent[leaf] = fix(v)
            continue
        parent[leaf] = [fix(x) for x in v] if is_list and isinstance(v, list) else fix(v)


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise RlaifError(f"--set {item!r}: expected key.sub=value (e.g. --set generate.num_candidates=2)")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key:
        raise RlaifError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(d: dict, overrides: list[str]) -> set[str]:
    touched = set()
    for item in overrides:
        key, value = parse_override(item)
        parts = key.split(".")
        cur = d
        for part in parts[:-1]:
            nxt = cur.get(part)
            if nxt is None:
                nxt = cur[part] = {}
            if not isinstance(nxt, dict):
                raise RlaifError(f"--set {item!r}: {part!r} is not a section")
            cur = nxt
        cur[parts[-1]] = value
        touched.add(key)
    return touched


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    loaded: LoadedYaml = load_yaml(path, "pipeline config")
    if loaded.duplicates:
        loc, line = loaded.duplicates[0]
        raise RlaifError(f"{loaded.path}:{line}: {'.'.join(map(str, loc))}: duplicate key; keep one")
    if not isinstance(loaded.data, dict):
        raise RlaifError(f"{loaded.path}:1: expected a mapping of pipeline sections (name, data, judge, ...)")
    data = loaded.data
    _resolve_paths(data, loaded.path.parent.resolve())
    touched = apply_overrides(data, overrides or [])
    if touched:
        _resolve_paths(data, Path.cwd(), only_keys=touched)
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as e:
        problems = format_pydantic_errors(loaded, e, overridden=touched)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RlaifError(problems[0] + more, problems=problems) from None
    cfg.source = str(loaded.path)
    from rlaif.judges import BACKENDS

    if cfg.judge.backend not in BACKENDS:
        where = "--set" if "judge.backend" in touched else f"{loaded.path}:{loaded.line_of(('judge', 'backend'))}:"
        raise RlaifError(f"{where} judge.backend: unknown backend {cfg.judge.backend!r}; "
                         f"choose one of {', '.join(sorted(BACKENDS))}")
    if cfg.policy.model == "tiny" and not cfg.policy.sft_data:
        raise RlaifError(f"{loaded.path}:{loaded.line_of(('policy',))}: policy.sft_data: required when policy.model is 'tiny'")
    return cfg
