"""Iterative rounds (``rounds: N``, ``rlaif run --rounds N``): the trained policy is sampled again,
judged again, mixed with the human labels again, and trained again.

Round 1 is the run directory itself (a one-round run is exactly the pipeline of before). Round
k >= 2 is a complete run directory of its own, ``<run>/rounds/<k>/`` (RunLayout.round_dir), run
with the same config except that its initial policy is round k-1's trained policy
(``policy.model`` = that folder, ``policy.skip_sft``): its ``sft`` stage copies that policy, its
``generate`` samples candidates from it on the training prompts, ``judge`` labels them, ``mix``
mixes them with the human labels, ``train-rm`` trains the round's reward model, ``train-policy``
trains from round k-1's policy, and ``eval`` compares it with round k-1's policy and with the SFT
policy on the held-out prompts. So every artifact of a round (candidates, judgements, AI pairs,
models, report) lives in its round's directory and store.

The human labels of round k >= 2 are the labels files' (read into every round's store) and those
given in the earlier rounds' directories (the viewer's verdicts, ``rlaif labels import``): a
reviewer's verdict on round 1's comparisons trains the later rounds too (``earlier_human_labels``).

``iteration`` (config.IterationConfig) changes three things in rounds k >= 2 (a ``RoundContext``
on the round's ``Run`` tells the stages which round they are in and where the earlier ones are):

- ``reference: previous | sft``: train-policy's reference policy is round k-1's policy (default)
  or the SFT policy (round 1's ``sft``); its hash is then in train-policy's input hash;
- ``earlier_pairs``: round k's mix also takes the AI pairs of rounds 1..k-1 (their judge output
  hashes are in the mix's input hash); off by default;
- ``reward_model: every_round | first_round``: train a reward model on each round's mix
  (default), or copy round 1's (its output hash is train-rm's input hash instead of the
  reward-model config).

Defaults hash exactly as before the options existed, and round 1 never depends on them, so
changing one re-runs only the stages of rounds >= 2 it reaches.

Skipping and resuming are the pipeline's own, per round: an unchanged re-run skips every stage
of every round; a killed run resumes in the round it was in (the rounds before it are skipped).
Round k-1's policy can change in place (its path stays the same), so the content hash of the
policy round k starts from is in the input hash of round k's ``sft`` (the copy) and ``critique``
(whose first answers that policy writes) stages (``source_parts``): a changed policy re-runs them,
and the stages after them when the copy's files differ, whenever the run is killed; the round
also records the version it started from in ``round_source.json``. A round >= 2 trains no SFT,
so its critique stage's revisions reach training through the mix only (``critique.in_mix``).

After the last round ``rounds.json``, ``rounds.md`` and ``rounds.png`` in the run directory hold
the per-round figures (rlaif/rounds_report.py) and report.md links them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rlaif.errors import RlaifError
from rlaif.layout import RunLayout, finalize_dir, partial_dir

if TYPE_CHECKING:  # pragma: no cover
    from rlaif.config import IterationConfig, PipelineConfig
    from rlaif.pipeline import Run


@dataclass(frozen=True)
class RoundContext:
    """What round ``k`` >= 2 knows of the rounds before it: their run directories (``earlier[0]``
    is round 1's, whose ``sft`` is the SFT policy), the ``iteration`` settings and the version of round
    k-1's policy it starts from."""

    k: int
    earlier: tuple[RunLayout, ...]
    settings: IterationConfig
    source_hash: str = "missing"  # the content hash of round k-1's policy, which this round starts from

    @property
    def first(self) -> RunLayout:
        return self.earlier[0]


def provenance(run: Run) -> dict:
    """The round a run directory is (manifest.json, report.json): round 1 (or a one-round run) is
    ``{"round": 1}``; round k >= 2 names round 1's directory and the iteration settings."""
    ctx = context(run)
    if ctx is None:
        return {"round": 1}
    return {"round": ctx.k, "round_1_dir": str(ctx.first.root), "iteration": ctx.settings.model_dump(mode="json")}


def _stage_info(layout: RunLayout, stage: str) -> dict:
    """A finished stage's info in another round's store ({} when it has not finished)."""
    from rlaif.store import Store

    if not layout.store.exists():
        return {}
    store = Store(layout.store, readonly=True)
    try:
        rec = store.stage(stage)
    finally:
        store.close()
    return rec["info"] if rec and rec["status"] == "done" else {}


def context(run: Run) -> RoundContext | None:
    return getattr(run, "round", None)


def recorded_context(manifest: dict) -> RoundContext | None:
    """The round context a run directory was made in, from its manifest (``provenance``): None in round 1;
    in round k >= 2, the earlier rounds' directories (round 1's as named, rounds 2..k-1 under it). For reading
    what the round read (its human labels); the source policy's hash is not recorded there."""
    from rlaif.config import IterationConfig

    k = int(manifest.get("round", 1))
    if k < 2:
        return None
    first = RunLayout(Path(manifest["round_1_dir"]))
    earlier = (first, *(RunLayout(first.round_dir(j)) for j in range(2, k)))
    return RoundContext(k, earlier, IterationConfig.model_validate(manifest["iteration"]))


# ------------------------------------------------------------------ the policy a round starts from
def source_parts(run: Run) -> dict:
    """In a round >= 2, the content hash of round k-1's policy (its ``sft`` stage copies it, its critique
    stage answers with it): the path alone stays the same when that policy is retrained in place."""
    ctx = context(run)
    return {} if ctx is None else {"round_source": ctx.source_hash}


# ------------------------------------------------------------------ human labels given in earlier rounds
def _earlier_human(run: Run, read) -> list:
    """``read(store)``'s records from rounds 1..k-1's stores that are not a labels file's (those files are read
    into every round's store): the viewer's verdicts and ``rlaif labels import``'s labels, given in the round
    directories they were pointed at."""
    from rlaif.store import Store
    from rlaif.vocab import FILE

    ctx = context(run)
    out: list = []
    for lay in ctx.earlier if ctx is not None else ():
        if lay.store.exists():
            store = Store(lay.store, readonly=True)
            try:
                out += [x for x in read(store) if not x.source.startswith(FILE)]
            finally:
                store.close()
    return out


def earlier_human_labels(run: Run) -> list:
    """The human labels of rounds 1..k-1 that round k's mix, agreement gate and weight fit take too (before
    the round's own, so that a later verdict on the same comparison wins); [] in round 1."""
    return _earlier_human(run, lambda store: store.human_labels())


def earlier_feedback(run: Run) -> list:
    """Likewise the single-response feedback (thumbs, ratings, rankings) of rounds 1..k-1."""
    return _earlier_human(run, lambda store: store.feedback())


# ------------------------------------------------------------------ iteration.reference
def reference_dir(run: Run) -> Path | None:
    """train-policy's reference when it is not the round's initial policy (``layout.sft``): the SFT
    policy in a round >= 2 with ``iteration.reference: sft``; else None."""
    ctx = context(run)
    return ctx.first.sft if ctx is not None and ctx.settings.reference == "sft" else None


def reference_parts(run: Run) -> dict:
    ref = reference_dir(run)
    return {} if ref is None else {"reference": _stage_info(context(run).first, "sft").get("output_hash", "missing")}


# ------------------------------------------------------------------ iteration.earlier_pairs
def _earlier_judgements(run: Run) -> list[tuple[int, RunLayout, dict]]:
    ctx = context(run)
    if ctx is None or not ctx.settings.earlier_pairs:
        return []
    return [(j, lay, _stage_info(lay, "judge")) for j, lay in enumerate(ctx.earlier, start=1)]


def earlier_pairs_parts(run: Run) -> dict:
    got = _earlier_judgements(run)
    return {"earlier_pairs": [info.get("output_hash", "missing") for _, _, info in got]} if got else {}


def earlier_ai_pairs(run: Run) -> tuple[list[dict], dict[str, int]]:
    """The AI pairs of rounds 1..k-1 (as the mix reads them) and their count per round ({} when off)."""

    from rlaif.store import Store

    pairs: list[dict] = []
    counts: dict[str, int] = {}
    for j, lay, info in _earlier_judgements(run):
        if "judge_hash" not in info:
            raise RlaifError(f"{lay.root}: round {j}'s judge stage has not finished; re-run `rlaif run` to "
                             "finish the rounds in order")
        store = Store(lay.store, readonly=True)
        try:
            # Held whole: a pair's ``row`` is a row id in *its* round's store, which the mix must not resolve
            # in this round's.
            got = [{k: v for k, v in a.items() if k != "row"} for a in store.iter_ai_pairs(info["judge_hash"],
                                                                                         gap_only=True)]
        finally:
            store.close()
        pairs += got
        counts[str(j)] = len(got)
    return pairs, counts


# ------------------------------------------------------------------ iteration.reward_model
def reuses_reward_model(run: Run) -> bool:
    ctx = context(run)
    return ctx is not None and ctx.settings.reward_model == "first_round"


def reward_model_parts(run: Run) -> dict:
    """train-rm's own inputs: the reward-model config, or round 1's reward model when it is reused."""
    if reuses_reward_model(run):
        return {"round_1_reward_model": _stage_info(context(run).first, "train-rm").get("output_hash", "missing")}
    return {"reward_model": run.cfg.reward_model.hash_view()}


def reward_model_eval_pairs(run: Run, ev):
    """(the eval pairs ``ev`` the round's reward model is measured on, how many were left out or None). With
    ``iteration.reward_model: first_round`` a round >= 2's reward model is round 1's, and this round's held-out
    prompts include those that its own human labels drew (a reviewer's verdicts given in this round's directory):
    round 1's mix trained on their AI pairs, so the pairs on a prompt round 1 trained on (``mixing.prompt_unit``)
    are left out. Otherwise ``ev`` whole and None."""
    if not reuses_reward_model(run) or not len(ev):
        return ev, None
    from datasets import load_from_disk

    from rlaif import stages
    from rlaif.mixing import prompt_unit

    first = context(run).first.pairs
    if not stages.get("mix").output_path(context(run).first).is_file():
        raise RlaifError(f"{first}: round 1's mixed pairs are missing (its reward model is measured without the "
                         "prompts they trained it on); re-run `rlaif run` to mix them again")
    trained: set[int] = set()  # one number per prompt (hash() within this call only), not its text
    for batch in load_from_disk(str(first))["train"].select_columns(["prompt"]).iter(10_000):
        trained.update(hash(prompt_unit(p)) for p in set(batch["prompt"]))
    keep = [i for i, p in enumerate(ev["prompt"]) if hash(prompt_unit(p)) not in trained]
    return ev.select(keep), len(ev) - len(keep)


def copy_first_reward_model(run: Run) -> dict:
    """train-rm in a round >= 2 with ``iteration.reward_model: first_round``: round 1's reward model,
    copied into this round's directory (whole or not at all)."""


    src = context(run).first.reward_model
    if not (src / "config.json").exists():
        raise RlaifError(f"{src}: round 1's reward model is missing; re-run `rlaif run` to train it")
    out = run.layout.reward_model
    work = partial_dir(out) / "copy"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work)
    finalize_dir(work, out)
    shutil.rmtree(partial_dir(out), ignore_errors=True)
    return {"copied_from_round": 1, "copied_from": str(src)}


# ------------------------------------------------------------------ eval against the SFT policy
def eval_parts(run: Run) -> dict:
    """A round >= 2's eval also measures against the SFT policy with round 1's reward model
    (rlaif/rounds_report.py): their hashes are its inputs too."""
    ctx = context(run)
    if ctx is None:
        return {}
    return {"sft_policy": _stage_info(ctx.first, "sft").get("output_hash", "missing"),
            "round_1_reward_model": _stage_info(ctx.first, "train-rm").get("output_hash", "missing")}


# ------------------------------------------------------------------ running the rounds
def round_config(cfg: PipelineConfig, previous_policy: Path) -> PipelineConfig:
    """The config of a round >= 2: ``cfg`` started from ``previous_policy``, one round, its own workdir."""
    policy = cfg.policy.model_copy(update={"model": str(Path(previous_policy).resolve()), "skip_sft": True})
    return cfg.model_copy(update={"policy": policy, "rounds": 1, "workdir": None})


def _stamp_source(layout: RunLayout, source: Path, source_hash: str) -> None:
    from rlaif.outputs import write_whole

    write_whole(layout.round_source, json.dumps({"policy": str(source), "policy_hash": source_hash}))


def run_rounds(cfg: PipelineConfig, names: tuple[str, ...], workdir: str | None = None,
               force: bool = False) -> list[Run]:
    """Run ``names`` in every round (``cfg.rounds`` of them) and write the per-round figures."""
    from rlaif.pipeline import run_pipeline

    _check_round_dirs(RunLayout.for_run(cfg.workdir, cfg.name, workdir), cfg.rounds)
    # Round 1's directory stays locked until the last round is done: the later rounds read its outputs and
    # write its rounds report (one writer per run directory, rlaif/runlock.py).
    runs = [run_pipeline(cfg, names, workdir, force=force, keep_lock=True)]
    try:
        _later_rounds(cfg, names, runs, force)
    finally:
        runs[0].lock.release()
    return runs


def _check_round_dirs(root: RunLayout, rounds: int) -> None:
    """Before round 1 runs: every later round's directory can be made (a file in its place is exit 2)."""
    for k in range(2, rounds + 1):
        for p in (root.round_dir(k).parent, root.round_dir(k)):
            if p.exists() and not p.is_dir():
                raise RlaifError(f"{p}: exists and is not a directory, but round {k} of this run is written "
                                 "there; move it away and re-run")


def _later_rounds(cfg: PipelineConfig, names: tuple[str, ...], runs: list[Run], force: bool) -> None:
    from rlaif.hashing import dir_hash
    from rlaif.pipeline import run_pipeline

    root = runs[0].layout
    for k in range(2, cfg.rounds + 1):
        previous = runs[-1].layout.policy
        source_hash = dir_hash(previous)
        layout = RunLayout(root.round_dir(k))
        # A record only: which version the round starts from is in its sft and critique stages' input hashes.
        layout.root.mkdir(parents=True, exist_ok=True)
        _stamp_source(layout, previous, source_hash)
        ctx = RoundContext(k, tuple(r.layout for r in runs), cfg.iteration, source_hash)
        runs.append(run_pipeline(round_config(cfg, previous), names, str(layout.root), force=force, round_ctx=ctx))
    if cfg.rounds > 1 and "eval" in names:
        from rlaif.rounds_report import write_rounds_report

        write_rounds_report(root, [r.layout for r in runs])
