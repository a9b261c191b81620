"""The stage table: each pipeline stage declared once.

A ``Stage`` says what the pipeline (rlaif/pipeline.py), the launcher (rlaif/launch.py) and the
CLI (rlaif/cli.py) need to know about it:

- ``needs(cfg)``: the stages whose outputs it reads (checked before it starts; their output hashes
  are part of its input hash);
- ``hash_parts(run)``: its own inputs (config sections, file contents) in the input hash;
- ``output`` / ``marker``: the RunLayout entry it writes and the file whose presence means the
  output is complete (a stage without one records its output in the run store only);
- ``run(run) -> info``: the work, with heavy imports inside; ``info["output_hash"]`` identifies
  the output for the stages after it;
- ``launchable``: whether ``--launcher accelerate`` can run it in several processes;
- ``checkpoints``: whether it trains with checkpoints (checked and stamped before it starts);
- ``gated``: whether the agreement gate (``mix.min_judge_agreement``, rlaif/gate.py) must pass first;
- ``enabled(cfg)``: whether the stage is on (``critique`` is off unless ``critique.enabled``).

The order of ``STAGES`` is the order of ``rlaif run``. Only stdlib imports at module level:
the CLI reads this table to build its parser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rlaif.errors import RlaifError
from rlaif.hashing import content_hash, content_hash_of_items

if TYPE_CHECKING:  # pragma: no cover
    from rlaif.config import PipelineConfig
    from rlaif.layout import RunLayout
    from rlaif.pipeline import Run


@dataclass(frozen=True)
class Stage:
    name: str
    needs: Callable[[PipelineConfig], tuple[str, ...]]
    hash_parts: Callable[[Run], dict]
    run: Callable[[Run], dict]
    output: str | None = None
    marker: str | None = None
    launchable: bool = False
    checkpoints: bool = False  # trains with resumable checkpoints in the output's .partial folder
    gated: bool = False  # trains on the mix: the agreement gate (rlaif/gate.py) is checked before it runs
    enabled: Callable[[PipelineConfig], bool] = lambda cfg: True  # an optional stage is off unless its config says

    def output_path(self, layout: RunLayout) -> Path | None:
        """The file whose presence means this stage's output is complete (None: nothing on disk)."""
        if self.output is None:
            return None
        path = getattr(layout, self.output)
        return path / self.marker if self.marker else path

    def output_root(self, layout: RunLayout) -> Path | None:
        """The whole output (folder or file) whose files are recorded when the stage finishes."""
        return None if self.output is None else getattr(layout, self.output)


def _always(*stages: str) -> Callable[[PipelineConfig], tuple[str, ...]]:
    return lambda cfg: stages


# ------------------------------------------------------------------ critique
def revisions_in_sft(cfg: PipelineConfig) -> bool:
    """Whether ``sft`` trains on the critique stage's revisions too (no SFT with ``policy.skip_sft``: a round
    >= 2 starts from the previous round's policy, and its revisions reach training through the mix only)."""
    return cfg.critique.enabled and cfg.critique.in_sft and not cfg.policy.skip_sft


def revisions_in_mix(cfg: PipelineConfig) -> bool:
    return cfg.critique.enabled and cfg.critique.in_mix


def _critique_parts(run: Run) -> dict:
    from rlaif.rounds import source_parts

    served = run.cfg.generate.backend == "openai"
    return {"critique": run.cfg.critique.model_dump(mode="json", exclude={"batch_size", "in_mix", "in_sft",
                                                                          "examples"}),
            "constitution": run.inputs.constitution.hash, "judge": run.cfg.judge.call_hash()
            if run.cfg.critique.reviser == "judge" else None,
            "prompts": [(p.id, p.text, p.category) for p in run.inputs.prompts if p.split == "train"],
            "examples": run.inputs.file_hashes.get("critique_examples"),  # the file's content, not its path
            # The initial policy that answers first: the model sft starts from, or the served one.
            "policy": None if served else (run.cfg.policy.model_dump(mode="json", include={"model", "tiny"})
                                           | {"sft_data": run.inputs.file_hashes.get("sft_data")}),
            "served": run.cfg.generate.served.hash_view("model", "base_url")
            if served else None, **({} if served else source_parts(run))}  # a round >= 2: the version it starts from


def _critique(run: Run) -> dict:
    from rlaif.critique import run_critique

    return run_critique(run)


# ------------------------------------------------------------------ sft
def _sft_needs(cfg: PipelineConfig) -> tuple[str, ...]:
    return ("critique",) if revisions_in_sft(cfg) else ()


def _sft_parts(run: Run) -> dict:
    from rlaif.rounds import source_parts

    return {"policy": run.cfg.policy.hash_view(),
            "sft_data": run.inputs.file_hashes.get("sft_data"),
            **source_parts(run)}  # a round >= 2: the content of the previous round's policy it copies


def _sft(run: Run) -> dict:
    from rlaif.hashing import dir_hash
    from rlaif.train.sft import run_sft

    revisions = []
    if revisions_in_sft(run.cfg):
        from rlaif.critique import revision_sft_rows

        revisions = revision_sft_rows(run.layout)
    info = run_sft(run.cfg.policy, run.cfg.seed, run.layout, [p.text for p in run.inputs.prompts], run.device,
                   run.cfg.data.system_prompt, revisions)
    info["output_hash"] = dir_hash(run.layout.sft)
    return info


# ------------------------------------------------------------------ generate
def _generate_parts(run: Run) -> dict:
    return {"generate": run.cfg.generate.hash_view(),
            "prompts": [(p.id, p.text, p.split) for p in run.inputs.prompts]}


def _generate(run: Run) -> dict:
    from rlaif.generate import generate_candidates

    gen_hash = run.input_hash("generate")
    made = generate_candidates(run.store, run.layout.sft, run.output_hash("sft"), gen_hash, run.cfg.generate,
                               run.cfg.seed, run.device)
    over = made.get("over_context")
    if over:  # a final outcome, recorded: these prompts get no candidates (rlaif/generate_openai.py)
        from rlaif.progress import console

        console.print(f"[yellow]generate: {over['prompts']} prompt(s) got no candidates: {over['fix']} "
                      f"({over['error']})[/yellow]")
    n, policies = 0, set()

    def counted():
        nonlocal n
        for c in run.store.iter_candidates(gen_hash):  # streamed: a million candidates are never held at once
            n += 1
            policies.add(c.policy_hash)  # the local policy's hash, or served:<the model the server named>
            yield (c.id, c.text)

    output_hash = content_hash_of_items(counted())
    if n == 0 and over:
        raise RlaifError(f"generate: every prompt is over the served model's context length, no candidates: "
                         f"{over['fix']} ({over['error']})")
    return {"gen_hash": gen_hash, **made, "candidates": n, "output_hash": output_hash,
            "sampled_by": sorted(policies)}


# ------------------------------------------------------------------ judge
def _judge_parts(run: Run) -> dict:
    parts = {"judge": run.cfg.judge.call_hash(), "constitution": run.inputs.constitution.hash,
             "categories": {p.id: p.category for p in run.inputs.prompts}}
    if run.cfg.judge.weights == "fitted":  # the weights are fitted to the human training pairs
        from rlaif.fit_weights import train_split_hash

        parts["human_train"] = train_split_hash(run)
    return parts


def _judge(run: Run) -> dict:
    from rlaif.judges import make_judge
    from rlaif.judges.base import close_judge
    from rlaif.judges.run import judge_candidates, judge_pairwise

    jc = run.cfg.judge
    judge = make_judge(jc, run.device, run.cfg.seed, run.store)
    judge_hash = run.input_hash("judge")
    gen_hash = run.results_of("generate")["gen_hash"]
    fitted = None
    try:
        if jc.weights == "fitted":
            from rlaif.fit_weights import fit_for_run

            fitted = fit_for_run(run, judge)
        if jc.resolved_method == "pairwise":
            info = judge_pairwise(run.store, judge, run.inputs.constitution, gen_hash, judge_hash, jc.pairs,
                                  jc.principles, run.cfg.seed, jc.batch_size,
                                  p_first=fitted.comparison_p_first if fitted else None)
        else:
            info = judge_candidates(run.store, judge, run.inputs.constitution, gen_hash, judge_hash, jc.pairs,
                                    jc.temperature, jc.batch_size, total=fitted.item_total if fitted else None,
                                    pair_temperature=1.0 if fitted else None)
    finally:
        close_judge(judge)
    if fitted is not None:
        info["fitted_weights"] = fitted.to_dict()
    idle = run.inputs.constitution.idle_principles(run.store.prompt_categories("train"))
    if idle:  # applies_to names no category the prompts have: these principles judged nothing
        from rlaif.progress import console

        console.print(f"[yellow]judge: principle(s) {', '.join(idle)} apply to no prompt of this run (their "
                      f"applies_to names none of the prompts' categories); check applies_to in "
                      f"{run.cfg.judge.constitution}[/yellow]")
        info["idle_principles"] = idle
    run.store.put_judge_set(judge_hash, run.inputs.constitution.hash, gen_hash)
    info.update({"judge_hash": judge_hash, "backend": judge.backend, "model": judge.model,
                 "template_hash": judge.template_hash, "constitution_hash": run.inputs.constitution.hash,
                 "output_hash": content_hash_of_items((c, r, round(conf, 6))
                                                      for c, r, conf in run.store.ai_pair_choices(judge_hash))})
    return info


# ------------------------------------------------------------------ mix
def _mix_needs(cfg: PipelineConfig) -> tuple[str, ...]:
    return ("judge", "critique") if revisions_in_mix(cfg) else ("judge",)


def _mix_parts(run: Run) -> dict:
    from rlaif.mixing import prompt_unit
    from rlaif.rounds import earlier_pairs_parts

    human, feedback = run.all_human_labels(), run.all_feedback()
    parts = {"mix": run.cfg.mix.hash_view(),
             "human": content_hash([(x.key, x.chosen, x.label, x.source) for x in human]),
             "feedback": content_hash([(f.key, f.kind, f.value, f.scale, f.source) for f in feedback]),
             **earlier_pairs_parts(run)}  # iteration.earlier_pairs in a round >= 2 (rlaif/rounds.py)
    # The policy-eval prompts that labels or training prompts (their AI pairs) touch are kept out of training
    # (mixing.mix): in the hash only when there are any, so runs without such an overlap keep their hashes.
    touched = {x.prompt for x in (*human, *feedback)} | {p.text for p in run.store.prompts("train")}
    overlap = run.policy_eval_units() & set(map(prompt_unit, touched))
    if overlap:
        parts["policy_eval_labelled"] = content_hash(sorted(overlap))
    return parts


def _mix(run: Run) -> dict:
    from itertools import chain

    from rlaif.hashing import dir_hash
    from rlaif.mixing import mix, save_pairs
    from rlaif.rounds import earlier_ai_pairs

    earlier, by_round = earlier_ai_pairs(run)
    ai = chain(run.store.iter_ai_pairs(run.results_of("judge")["judge_hash"], gap_only=True), earlier)
    revisions = []
    if revisions_in_mix(run.cfg):
        from rlaif.critique import revision_pairs

        revisions = revision_pairs(run.layout)
    splits, stats = mix(ai, run.all_human_labels(), run.cfg.mix, run.cfg.seed, run.all_feedback(), revisions,
                        resolve=run.store.ai_pairs_by_rows, policy_eval=run.policy_eval_units())
    save_pairs(splits, run.layout)
    if by_round:
        stats["earlier_ai_pairs"] = by_round  # AI pairs in (before filtering) from each earlier round
    stats["output_hash"] = dir_hash(run.layout.pairs)
    return stats


# ------------------------------------------------------------------ train-rm
def _train_rm_parts(run: Run) -> dict:
    from rlaif.rounds import reward_model_parts

    return reward_model_parts(run)  # the config, or round 1's model (iteration.reward_model: first_round)


def _train_rm(run: Run) -> dict:
    from rlaif.hashing import dir_hash
    from rlaif.rounds import copy_first_reward_model, reuses_reward_model
    from rlaif.train.reward import train_reward_model

    if reuses_reward_model(run):
        info = copy_first_reward_model(run)
    else:
        info = train_reward_model(run.cfg.reward_model, run.cfg.seed, run.layout, run.device)
    info["output_hash"] = dir_hash(run.layout.reward_model)
    return info


# ------------------------------------------------------------------ train-policy
def _policy_needs(cfg: PipelineConfig) -> tuple[str, ...]:
    from rlaif.train.policy import uses_reward_model

    return ("sft", "mix", "train-rm") if uses_reward_model(cfg.policy_training) else ("sft", "mix")


def _train_policy_parts(run: Run) -> dict:
    from rlaif.rounds import reference_parts
    from rlaif.train.policy import is_online, uses_judge_reward

    parts: dict = {"policy_training": run.cfg.policy_training.hash_view(), **reference_parts(run)}
    if is_online(run.cfg.policy_training):  # online RL: rewarded on the train prompts
        parts["prompts"] = [(p.id, p.text) for p in run.inputs.prompts if p.split == "train"]
    if uses_judge_reward(run.cfg.policy_training):  # the judge's settings and principles give the reward
        parts["judge_reward"] = _judge_parts(run)
        refs = _judge_references(run)
        if refs is not None:  # pairwise: the reference responses the rollouts are compared with
            parts["judge_reward_references"] = content_hash(sorted(refs.items()))
    return parts


def _judge_references(run: Run) -> dict[str, str] | None:
    """Pairwise judge rewards: each training prompt's reference response (the first of its candidates from
    the generate stage, i.e. the SFT policy's); None: pointwise."""
    if run.cfg.policy_training.judge_reward.method != "pairwise":
        return None
    from rlaif.judges.reward import reference_responses

    return reference_responses(run.store, run.results_of("generate").get("gen_hash", ""), run.store.prompts("train"))


def _train_policy(run: Run) -> dict:
    from rlaif.hashing import dir_hash
    from rlaif.rounds import reference_dir
    from rlaif.train.policy import train_policy, uses_judge_reward

    c = run.cfg
    train = run.store.prompts("train")
    prompts = [p.text for p in train]
    judge = None
    if uses_judge_reward(c.policy_training):
        from rlaif.judges.reward import judge_reward_for
        from rlaif.train.online import local_device

        judge = judge_reward_for(c.judge, run.inputs.constitution, {p.text: p.category for p in train},
                                 run.store.path, local_device(run.device), c.seed, _judge_references(run))
    ref = reference_dir(run)
    info = train_policy(c.policy_training, c.seed, run.layout, prompts, c.reward_model.train.max_length, run.device,
                        judge, ref)
    if ref is not None:
        info["reference"] = str(ref)
    # Under `--launcher accelerate` only the main process writes the policy.
    info["output_hash"] = dir_hash(run.layout.policy) if run.layout.policy.exists() else None
    return info


# ------------------------------------------------------------------ eval
def _eval_parts(run: Run) -> dict:
    from rlaif.rounds import eval_parts

    parts = {"eval": run.cfg.eval.model_dump(), **eval_parts(run)}  # a round >= 2: the SFT policy, round 1's RM
    if "eval_prompts" in run.inputs.file_hashes:  # the held-out prompts' content, not just their path
        parts["eval_prompts"] = run.inputs.file_hashes["eval_prompts"]
    return parts


def _eval(run: Run) -> dict:
    from rlaif.report import build_report, write_report

    report = build_report(run)
    write_report(run, report)
    return {"output_hash": content_hash(report["counts"])}


STAGES: tuple[Stage, ...] = (
    Stage("critique", _always(), _critique_parts, _critique, output="critique", marker="pairs.jsonl",
          enabled=lambda cfg: cfg.critique.enabled),
    Stage("sft", _sft_needs, _sft_parts, _sft, output="sft", marker="config.json", checkpoints=True),
    Stage("generate", _always("sft"), _generate_parts, _generate),
    Stage("judge", _always("generate"), _judge_parts, _judge),
    Stage("mix", _mix_needs, _mix_parts, _mix, output="pairs", marker="dataset_dict.json"),
    Stage("train-rm", _always("mix"), _train_rm_parts, _train_rm, output="reward_model", marker="config.json",
          launchable=True, checkpoints=True, gated=True),
    Stage("train-policy", _policy_needs, _train_policy_parts, _train_policy, output="policy", marker="config.json",
          launchable=True, checkpoints=True, gated=True),
    Stage("eval", _always("sft", "judge", "mix", "train-rm", "train-policy"), _eval_parts, _eval,
          output="report_json"),
)
NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
LAUNCHABLE: tuple[str, ...] = tuple(s.name for s in STAGES if s.launchable)
_BY_NAME = {s.name: s for s in STAGES}


def get(name: str) -> Stage:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}") from None
