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
from pydantic import Field, ValidationError, field_validator

from rlaif.config_base import (  # noqa: F401 - re-exported
    SystemRole,
    TrainArgs,
    _Section,
    system_role_field,
)
from rlaif.config_models import PolicyConfig, RewardModelConfig, TinyModel  # noqa: F401 - re-exported
from rlaif.config_training import (  # noqa: F401 - re-exported: the policy_training section lives there
    DPO_LOSSES,
    REWARD_SOURCES,
    DPOSettings,
    GroupRLSettings,
    GRPOSettings,
    JudgeRewardSettings,
    KTOSettings,
    LoraSettings,
    PolicyTrainingConfig,
    PPOSettings,
    RewardWeights,
    RLOOSettings,
)
from rlaif.errors import RlaifError
from rlaif.hashing import content_hash
from rlaif.yamlio import LoadedYaml, format_pydantic_errors, load_yaml

# Seeds reach torch.manual_seed (64-bit) after arithmetic (seed * 100003 + epoch).
MAX_SEED = 2**32 - 1


class DataConfig(_Section):
    prompts: str = Field(..., description="JSONL of {id?, text, category?}")
    eval_fraction: float = Field(0.15, ge=0, lt=1, description="prompts held out for policy evaluation")
    max_prompts: int | None = Field(None, ge=1)
    system_prompt: str | None = Field(None, description="system message added to every conversation that has none")


class ServedPolicy(_Section):
    """generate.backend openai: the policy served by an OpenAI-compatible server (vLLM, SGLang, transformers serve)."""
    model: str | None = Field(None, description="the served model name (as the server lists it)")
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the key")
    concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    send_seed: bool = Field(True, description="send a per-prompt seed (vLLM, SGLang, OpenAI honour it)")
    system_role: SystemRole = system_role_field("the served policy")

    def hash_view(self, *fields: str) -> dict:
        """``fields`` of the served policy, and system_role when it is not the default (old runs keep their hash)."""
        out = self.model_dump(mode="json", include=set(fields))
        if self.system_role != "system":
            out["system_role"] = self.system_role
        return out


class GenerateConfig(_Section):
    backend: Literal["transformers", "openai"] = Field("transformers", description="sample locally or from a server")
    served: ServedPolicy = ServedPolicy()
    num_candidates: int = Field(4, ge=2)
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    batch_size: int = Field(16, ge=1)

    def hash_view(self) -> dict:
        """The fields that change the candidates: not batching or the client's speed settings; the local
        backend hashes as before the served option existed (old runs stay valid)."""
        out = self.model_dump(mode="json", exclude={"batch_size", "backend", "served"})
        if self.backend == "openai":
            out["served"] = self.served.hash_view("model", "base_url", "send_seed")
        return out


class FitSettings(_Section):
    """judge.weights: fitted (rlaif/fit_weights.py)."""

    l2: float = Field(1.0, gt=0, description="L2 penalty of the logistic fit (scikit-learn C = 1 / l2)")
    length_features: bool = Field(False, description="also fit a weight on log(1 + words) of each response")
    min_labels: int = Field(20, ge=2, description="fewest human training pairs to fit on (else exit 2)")


class JudgeConfig(_Section):
    backend: str = Field("embedding", description="registry key: embedding | openai | transformers")
    model: str = Field("minilm", description="embedding: 'minilm' or a local folder; openai: the served model "
                                             "name; transformers: a local path or hub id")
    constitution: str = Field(..., description="path to a constitution YAML")
    pairs: Literal["best_worst", "all", "adjacent"] = "best_worst"
    temperature: float = Field(0.1, gt=0, description="pointwise: score gap -> confidence sigmoid(gap / temperature)")
    batch_size: int = Field(64, ge=1, description="items per committed batch (and per forward pass locally)")
    weights: Literal["constitution", "fitted"] = Field(
        "constitution", description="principle weights: the constitution's, or fitted to the human training "
                                    "labels in the mix (logistic regression; rlaif/fit_weights.py)")
    fit: FitSettings = FitSettings()
    # ---- labelling method (LLM backends)
    method: Literal["auto", "pairwise", "pointwise"] = Field(
        "auto", description="auto: pointwise for embedding, pairwise for LLM backends")
    orders: Literal["both", "random"] = Field("both", description="pairwise: judge (A,B) and (B,A), or one seeded order")
    cot: bool = Field(False, description="pairwise: rationale first, then the single-token verdict")
    cot_clamp: tuple[float, float] | None = Field(None, description="clamp CoT probabilities, e.g. [0.4, 0.6]")
    cot_max_tokens: int = Field(256, ge=8)
    principles: Literal["all", "sample"] = Field("all", description="judge every principle, or sample one per comparison")
    top_logprobs: int = Field(5, ge=1, le=20)
    # ---- openai backend
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1 (vLLM, SGLang, Ollama, ...)")
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the key")
    concurrency: int = Field(8, ge=1)
    http_client: Literal["aiohttp", "httpx"] = Field(
        "aiohttp", description="the openai client's HTTP transport: aiohttp (faster under concurrency) or httpx")
    rpm: float | None = Field(None, gt=0, description="requests per minute limit")
    tpm: float | None = Field(None, gt=0, description="tokens per minute limit (estimated as chars/4)")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0)
    max_response_bytes: int = Field(1_000_000, ge=1024, description="a bigger response body is unscored, not read")
    max_calls: int | None = Field(None, ge=0, description="budget: stop the stage after this many calls")
    max_cost_usd: float | None = Field(None, ge=0, description="budget: stop when the cost reaches this")
    price_prompt_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens")
    price_completion_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens")
    system_role: SystemRole = system_role_field("the served judge")
    # ---- transformers backend
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    device_map: str | None = None
    max_length: int = Field(2048, ge=64, description="the longest judge prompt in tokens; a longer one is "
                            "unscored (not cut: its question is at the end)")

    @field_validator("cot_clamp")
    @classmethod
    def _clamp_ok(cls, v):
        if v is not None and not (0.0 <= v[0] < v[1] <= 1.0):
            raise ValueError("cot_clamp must be [low, high] with 0 <= low < high <= 1")
        return v

    @property
    def resolved_method(self) -> str:
        if self.method != "auto":
            return self.method
        from rlaif.judges import compares_pairs

        return "pairwise" if compares_pairs(self.backend) else "pointwise"

    def call_hash(self) -> dict:
        """The fields that change labels (not speed, budgets or secrets' names)."""
        return self.model_dump(mode="json", exclude={"batch_size", "constitution", "concurrency", "http_client",
                                                     "rpm", "tpm", "timeout_s", "max_retries", "max_response_bytes",
                                                     "max_calls", "max_cost_usd",
                                                     "api_key_env", "price_prompt_per_mtok",
                                                     "price_completion_per_mtok", "device_map"}
                               | ({"weights", "fit"} if self.weights == "constitution" else set())
                               | ({"system_role"} if self.system_role == "system" else set()))  # old hashes kept


MAX_FEEDBACK_PAIRS = 1000  # mix.feedback.max_pairs_per_group's default


class FeedbackConfig(_Section):
    """How thumbs, ratings and rankings become preference pairs (rlaif/feedback.py)."""

    pairs: Literal["all", "best_worst"] = Field(
        "all", description="all: every pair of differently rated responses of a prompt; best_worst: the best "
                           "against the worst only")
    margin: float = Field(1.0, ge=0, le=100, description="reward-model margin = this x the rating gap on a 0..1 "
                                                         "scale (5 vs 1 of 5: full margin); 0: no margin")
    max_pairs_per_group: int = Field(
        MAX_FEEDBACK_PAIRS, ge=1, le=10_000_000, description="at most this many pairs from one group (a prompt's "
        "thumbs, its ratings on one scale, one ranking); a group with more gives a stable sample of its pairs "
        "(3,000 thumbs on one prompt make 2.25M pairs)")


class MixConfig(_Section):
    human_labels: list[str] = Field(default_factory=list, description="files of human labels: pairs, thumbs, "
                                                                      "ratings, rankings")
    feedback: FeedbackConfig = FeedbackConfig()
    min_confidence: float = Field(0.55, ge=0.5, le=1, description="drop AI pairs below this confidence")
    human_eval_fraction: float = Field(0.25, ge=0, lt=1, description="share of human labels held out for eval")
    human_weight: float = Field(1.0, gt=0, description="loss weight of a human pair relative to an AI pair (1.0)")
    max_ai_per_human: float | None = Field(
        None, gt=0, description="mix ratio: keep at most this many AI pairs per human train pair"
    )
    min_judge_agreement: float | None = Field(
        None, gt=0, le=1, description="agreement gate: train-rm and train-policy stop (exit 2) when the judge's "
                                      "accuracy on the held-out human labels is below this; None: off")

    def hash_view(self) -> dict:
        """The fields that change the mixed pairs (not the gate; the human label files count by content)."""
        out = self.model_dump(exclude={"human_labels", "min_judge_agreement"})
        if self.feedback.max_pairs_per_group == MAX_FEEDBACK_PAIRS:
            del out["feedback"]["max_pairs_per_group"]  # the default hashes as before the key existed
        return out


class CritiqueConfig(_Section):
    """The critique stage (Constitutional AI's critique and revision, before ``sft``; rlaif/critique.py)."""

    enabled: bool = Field(False, description="run the critique stage (before sft)")
    reviser: Literal["policy", "judge"] = Field(
        "policy", description="who critiques and revises: the initial policy itself (the model sft starts from; not "
                              "the untrained tiny one), or "
                              "the judge's LLM backend (openai | transformers; the embedding judge writes no text)")
    passes: int = Field(1, ge=1, le=8, description="critique-revision rounds per prompt")
    max_new_tokens: int = Field(96, ge=1, description="per answer, critique and revision")
    temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature of every writer (the policy, an "
                                                            "openai or transformers judge); 0: greedy")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling of every writer (unused when greedy)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="the stage's seed (principle draws, sampling); "
                                                                 "None: the run's seed")
    max_prompts: int | None = Field(None, ge=1, description="first N train prompts only")
    batch_size: int = Field(16, ge=1, description="calls per committed batch")
    examples: str | None = Field(None, description="few-shot critique/revision dialogues before each critique and "
                                                   "revision call: an llm-swarm JSON file (its system_chat)")
    examples_per_call: int = Field(1, ge=1, le=16, description="dialogues drawn (seeded) per prompt and pass")
    in_sft: bool = Field(True, description="this run's sft also trains on the (prompt, final revision) rows")
    in_mix: bool = Field(True, description="the revision pairs join the mix (source 'revision', weighted like AI)")

    def stage_seed(self, run_seed: int) -> int:
        return run_seed if self.seed is None else self.seed

    def sampling(self, run_seed: int) -> tuple[float, float, int] | None:
        """The writers' sampling settings (in every call's cache key); None: greedy."""
        return (self.temperature, self.top_p, self.stage_seed(run_seed)) if self.temperature > 0 else None


class EvalConfig(_Section):
    max_prompts: int = Field(64, ge=1)
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(0.7, gt=0)
    prompts: str | None = Field(None, description="JSONL of held-out {id?, text, category} prompts for policy eval; "
                                "default: the data.eval_fraction split")
    samples_per_prompt: int = Field(4, ge=1, le=64, description="policy samples per held-out prompt")
    hacking_degeneration: float = Field(0.05, ge=0, description="reward-hacking warning: degeneration rise allowed")


class IterationConfig(_Section):
    """How round k >= 2 of ``rounds: N`` trains (rlaif/rounds.py); round 1 (and a one-round run) ignores it."""

    reference: Literal["previous", "sft"] = Field(
        "previous", description="train-policy's reference (DPO/KTO implicit reward, PPO/RLOO/GRPO KL): the "
                                "previous round's policy, or the SFT policy (round 1's sft)")
    earlier_pairs: bool = Field(
        False, description="also mix the AI pairs of rounds 1..k-1 into round k's mix (off: each round learns "
                           "from its own policy's samples only, as iterative DPO does)")
    reward_model: Literal["every_round", "first_round"] = Field(
        "every_round", description="train a reward model on each round's mix, or keep round 1's (copied)")


class PipelineConfig(_Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    workdir: str | None = Field(None, description="run directory; default runs/<name>")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig
    policy: PolicyConfig = PolicyConfig()
    generate: GenerateConfig = GenerateConfig()
    judge: JudgeConfig
    critique: CritiqueConfig = CritiqueConfig()
    mix: MixConfig = MixConfig()
    reward_model: RewardModelConfig = RewardModelConfig()
    policy_training: PolicyTrainingConfig = PolicyTrainingConfig()
    eval: EvalConfig = EvalConfig()
    rounds: int = Field(1, ge=1, le=20, description="iterative rounds (rlaif/rounds.py): round k+1 samples, "
                                                    "judges and trains again from round k's policy")
    iteration: IterationConfig = IterationConfig()

    # The file it came from (not part of the hash).
    source: str | None = Field(None, exclude=True)

    def section_hash(self, *names: str) -> str:
        return content_hash({n: getattr(self, n).model_dump(mode="json") for n in names} | {"seed": self.seed})

    @property
    def hash(self) -> str:
        return content_hash(self.model_dump(mode="json", exclude={"workdir", "source"}))


# Dotted names of fields that hold paths (resolved against the YAML's folder).
PATH_FIELDS = ("policy.sft_data", "data.prompts", "eval.prompts", "judge.constitution", "mix.human_labels[]", "workdir",
               "critique.examples")
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


def apply_overrides(d: dict, overrides: list[str]) -> dict[str, str]:
    """Apply ``--set`` items; returns {dotted key: the ``KEY=VALUE`` argument}."""
    touched: dict[str, str] = {}
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
        touched[key] = item
    return touched


def _where(loaded: LoadedYaml, touched: dict[str, str], dotted: str) -> str:
    """``--set KEY=VALUE:`` when an override set the field, else ``FILE:LINE:``."""
    for key, item in touched.items():
        if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
            return f"--set {item}:"
    return f"{loaded.path}:{loaded.line_of(tuple(dotted.split('.')))}:"


def _check_cross_fields(cfg: PipelineConfig, loaded: LoadedYaml, touched: dict[str, str]) -> None:
    # Values each inside its own range that together crash a later stage,
    # after the run directory was written: refuse them here (exit 2).
    if cfg.policy.model == "tiny":
        n = cfg.policy.tiny.n_positions
        for name, length in (("policy.sft.max_length", cfg.policy.sft.max_length),
                             ("policy_training.train.max_length", cfg.policy_training.train.max_length)):
            if length > n:
                raise RlaifError(f"{_where(loaded, touched, name)} {name}: {length} exceeds policy.tiny.n_positions "
                                 f"({n}); lower it or raise n_positions")
    c = cfg.critique
    if c.enabled and c.in_sft and cfg.policy.skip_sft:
        raise RlaifError(f"{_where(loaded, touched, 'critique.in_sft')} critique.in_sft: policy.skip_sft is true, so "
                         "no SFT would train on the revisions; set critique.in_sft: false or policy.skip_sft: false")
    if cfg.mix.min_judge_agreement is not None and cfg.mix.human_eval_fraction == 0:
        raise RlaifError(f"{_where(loaded, touched, 'mix.min_judge_agreement')} mix.min_judge_agreement: "
                         "mix.human_eval_fraction is 0, so no human label is held out to measure the judge on and "
                         "the gate would stop train-rm after every earlier stage ran; raise human_eval_fraction or "
                         "remove min_judge_agreement")
    seen: dict[str, str] = {}
    for path in cfg.mix.human_labels:  # a label's source is file:NAME:LINE (rlaif.vocab.file_source)
        name = Path(path).name
        if name in seen:
            raise RlaifError(f"{_where(loaded, touched, 'mix.human_labels')} mix.human_labels: two files are named "
                             f"{name!r} ({seen[name]}, {path}); labels are known by file name and line, so their "
                             "labels would mix: list each file once and rename one of the two")
        seen[name] = path
    pt = cfg.policy_training
    if pt.algorithm in ("dpo", "kto") and pt.reward != RewardWeights(reward_model=1.0):
        raise RlaifError(f"{_where(loaded, touched, 'policy_training.reward')} policy_training.reward: {pt.algorithm} "
                         "learns from the mixed data and takes no reward; remove it or set policy_training.algorithm "
                         "to ppo, rloo or grpo")
    if pt.algorithm == "kto" and pt.train.batch_size < 2:  # trl's KTOTrainer raises ValueError at train-policy
        field = "policy_training.train.batch_size"
        raise RlaifError(f"{_where(loaded, touched, field)} {field}: kto needs at least 2 examples a batch (its KL "
                         "term is estimated from the other examples of the batch); set it to 2 or more")


def _check_judge_reward(cfg: PipelineConfig, loaded: LoadedYaml, touched: dict[str, str]) -> None:
    from rlaif.judges import compares_pairs

    pt = cfg.policy_training
    if pt.judge_reward.method == "pairwise" and pt.reward.uses_judge and not compares_pairs(cfg.judge.backend):
        field = "policy_training.judge_reward.method"
        raise RlaifError(f"{_where(loaded, touched, field)} {field}: pairwise judge rewards need a judge backend that "
                         f"compares pairs; {cfg.judge.backend!r} scores pointwise only: use method: pointwise or "
                         "judge.backend: openai | transformers")


def _check_iteration(cfg: PipelineConfig, loaded: LoadedYaml, touched: dict[str, str]) -> None:
    if cfg.rounds > 1 and cfg.generate.backend == "openai":  # round k would sample the served model, not round k-1's
        raise RlaifError(f"{_where(loaded, touched, 'generate.backend')} generate.backend: rounds: {cfg.rounds} samples "
                         "each round from the previous round's trained policy, which a served policy is not; set "
                         "generate.backend: transformers, or rounds: 1 and serve each round's policy by hand")
    pt = cfg.policy_training
    if cfg.rounds > 1 and cfg.iteration.reference == "sft" and pt.lora is not None and pt.algorithm in ("rloo", "grpo"):
        raise RlaifError(f"{_where(loaded, touched, 'iteration.reference')} iteration.reference: {pt.algorithm} with "
                         "policy_training.lora keeps its own initial policy as the reference (adapters off); set "
                         "iteration.reference: previous or unset policy_training.lora")


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
    from rlaif.judges import BACKENDS, compares_pairs

    if cfg.judge.resolved_method == "pairwise" and cfg.judge.backend in BACKENDS and not compares_pairs(cfg.judge.backend):
        raise RlaifError(f"{loaded.path}:{loaded.line_of(('judge', 'method'))}: judge.method: backend "
                         f"{cfg.judge.backend!r} scores pointwise only; use method: pointwise or an LLM backend")
    if cfg.judge.backend not in BACKENDS:
        where = _where(loaded, touched, "judge.backend")
        raise RlaifError(f"{where} judge.backend: unknown backend {cfg.judge.backend!r}; "
                         f"choose one of {', '.join(sorted(BACKENDS))}")
    if cfg.judge.system_role != "system" and cfg.judge.backend != "openai":
        raise RlaifError(f"{_where(loaded, touched, 'judge.system_role')} judge.system_role: applies to judge.backend "
                         f"openai (a served judge); the {cfg.judge.backend!r} backend renders the chat template itself "
                         "(a template with no system role gets the system text in the first user turn); remove it")
    _check_cross_fields(cfg, loaded, touched)
    _check_iteration(cfg, loaded, touched)
    _check_judge_reward(cfg, loaded, touched)
    if cfg.policy.model == "tiny" and not cfg.policy.sft_data:
        raise RlaifError(f"{loaded.path}:{loaded.line_of(('policy',))}: policy.sft_data: required when policy.model is 'tiny'")
    return cfg
