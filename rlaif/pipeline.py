"""The pipeline: stages in order, each skipped when its inputs are unchanged.

Every stage has an input hash (its config section, the content hashes of
the files it reads, and the output hashes of the stages before it). A stage
whose recorded input hash matches and whose output exists is skipped. A
killed stage is redone on the next run, resuming from what it committed
(candidates and judge calls per batch, trainer checkpoints).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rlaif import __version__
from rlaif.config import PipelineConfig
from rlaif.constitution import Constitution, load_constitution
from rlaif.errors import RlaifError
from rlaif.hashing import content_hash, dir_hash, file_hash
from rlaif.records import HumanLabel, Prompt, load_human_labels, load_prompts, load_sft
from rlaif.store import Store

log = logging.getLogger(__name__)

STAGES = ("sft", "generate", "judge", "mix", "train-rm", "train-policy", "eval")
# What each stage reads: checked before a stage starts, so a missing input is a clear error.
NEEDS = {"sft": (), "generate": ("sft",), "judge": ("generate",), "mix": ("judge",), "train-rm": ("mix",),
         "train-policy": ("sft", "mix", "train-rm"), "eval": ("sft", "judge", "mix", "train-rm", "train-policy")}
OFFLINE_POLICY_NEEDS = ("sft", "mix")  # DPO learns from the pairs alone; online RL needs the reward model


@dataclass
class Inputs:
    """Everything read from user files, validated before anything is written."""

    prompts: list[Prompt]
    constitution: Constitution
    human_labels: list[HumanLabel]
    file_hashes: dict[str, str]


def split_prompts(prompts: list[Prompt], fraction: float, seed: int, limit: int | None) -> list[Prompt]:
    prompts = prompts[:limit] if limit else prompts
    out = []
    for p in prompts:
        held = int(content_hash([seed, "eval-split", p.id], 8), 16) / 0xFFFFFFFF < fraction
        out.append(Prompt(p.id, p.text, p.category, "eval" if held else "train"))
    return out


def load_inputs(cfg: PipelineConfig) -> Inputs:
    prompts = split_prompts(load_prompts(cfg.data.prompts), cfg.data.eval_fraction, cfg.seed, cfg.data.max_prompts)
    constitution = load_constitution(cfg.judge.constitution)
    labels: list[HumanLabel] = []
    hashes = {"prompts": file_hash(cfg.data.prompts)}
    for path in cfg.mix.human_labels:
        name = Path(path).name
        for h in load_human_labels(path):
            labels.append(HumanLabel(h.prompt, h.chosen, h.rejected, h.label, f"file:{h.source}"))
        hashes[f"labels:{name}"] = file_hash(path)
    if cfg.policy.sft_data:
        load_sft(cfg.policy.sft_data)
        hashes["sft_data"] = file_hash(cfg.policy.sft_data)
    if not any(p.split == "train" for p in prompts):
        raise RlaifError(f"{cfg.data.prompts}: no training prompts left after data.eval_fraction; lower it")
    return Inputs(prompts, constitution, labels, hashes)


@dataclass
class Run:
    cfg: PipelineConfig
    workdir: Path
    inputs: Inputs
    device: str = "cpu"
    store: Store | None = None
    results: dict[str, dict] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    # ---------------------------------------------------------------- paths
    @property
    def sft_dir(self) -> Path:
        return self.workdir / "sft"

    @property
    def pairs_dir(self) -> Path:
        return self.workdir / "pairs"

    @property
    def rm_dir(self) -> Path:
        return self.workdir / "reward_model"

    @property
    def policy_dir(self) -> Path:
        return self.workdir / "policy"

    # ---------------------------------------------------------------- hashes
    def output_hash(self, stage: str) -> str:
        rec = self.store.stage(stage)
        if rec is None or rec["status"] != "done":
            return "missing"
        return rec["info"].get("output_hash", rec["input_hash"])

    def input_hash(self, stage: str) -> str:
        c, h = self.cfg, self.inputs.file_hashes
        if stage == "sft":
            parts = {"policy": c.policy.model_dump(mode="json", exclude={"sft_data"}), "sft_data": h.get("sft_data")}
        elif stage == "generate":
            parts = {"sft": self.output_hash("sft"), "generate": c.generate.model_dump(exclude={"batch_size"}),
                     "prompts": [(p.id, p.text, p.split) for p in self.inputs.prompts]}
        elif stage == "judge":
            parts = {"generate": self.output_hash("generate"),
                     "judge": c.judge.call_hash(),
                     "constitution": self.inputs.constitution.hash,
                     "categories": {p.id: p.category for p in self.inputs.prompts}}
        elif stage == "mix":
            parts = {"judge": self.output_hash("judge"), "mix": c.mix.model_dump(exclude={"human_labels"}),
                     "human": content_hash([(x.key, x.chosen, x.label, x.source) for x in self.all_human_labels()])}
        elif stage == "train-rm":
            parts = {"mix": self.output_hash("mix"), "reward_model": c.reward_model.model_dump()}
        elif stage == "train-policy":
            parts = {"sft": self.output_hash("sft"), "mix": self.output_hash("mix"),
                     "policy_training": c.policy_training.hash_view()}
            if c.policy_training.algorithm != "dpo":  # online RL: rewarded by the RM on the train prompts
                parts["train-rm"] = self.output_hash("train-rm")
                parts["prompts"] = [(p.id, p.text) for p in self.inputs.prompts if p.split == "train"]
        elif stage == "eval":
            parts = {s: self.output_hash(s) for s in ("sft", "judge", "mix", "train-rm", "train-policy")}
            parts["eval"] = c.eval.model_dump()
        else:  # pragma: no cover
            raise ValueError(stage)
        return content_hash({"stage": stage, "seed": c.seed, "version": __version__, **parts})

    def all_human_labels(self) -> list[HumanLabel]:
        return self.store.human_labels()

    # ---------------------------------------------------------------- running
    def _outputs_exist(self, stage: str) -> bool:
        paths = {"sft": self.sft_dir / "config.json", "mix": self.pairs_dir / "dataset_dict.json",
                 "train-rm": self.rm_dir / "config.json", "train-policy": self.policy_dir / "config.json",
                 "eval": self.workdir / "report.json"}
        return stage not in paths or paths[stage].exists()

    def run_stage(self, stage: str, force: bool = False) -> None:
        from rlaif.progress import console

        fn: Callable[[], dict] = getattr(self, "stage_" + stage.replace("-", "_"))
        needs = NEEDS[stage]
        if stage == "train-policy" and self.cfg.policy_training.algorithm == "dpo":
            needs = OFFLINE_POLICY_NEEDS
        self.require(*needs)
        ih = self.input_hash(stage)
        rec = self.store.stage(stage)
        if not force and rec and rec["status"] == "done" and rec["input_hash"] == ih and self._outputs_exist(stage):
            console.print(f"[dim]skip {stage}: inputs unchanged ({ih})[/dim]")
            self.results[stage] = rec["info"]
            self.skipped.append(stage)
            return
        console.print(f"[bold cyan]{stage}[/bold cyan] ...")
        self.store.set_stage(stage, ih, "running")
        from rlaif.train.checkpoints import prepare_stage

        prepare_stage(self, stage, ih)  # no resume from another config's or a half-saved checkpoint
        t0 = time.perf_counter()
        from rlaif.judges.errors import JudgeFatalError
        from rlaif.judges.llm import BudgetExceeded

        try:
            info = fn()
        except JudgeFatalError as e:  # wrong key, no access, unknown model: finished calls are cached
            self.store.set_stage(stage, ih, "stopped", time.perf_counter() - t0, {"reason": str(e)})
            raise
        except BudgetExceeded as e:
            self.store.set_stage(stage, ih, "stopped", time.perf_counter() - t0, {"reason": str(e)})
            raise RlaifError(f"{stage} stopped: {e}; completed calls are cached, raise the budget and "
                             "re-run to resume", exit_code=3) from None
        seconds = time.perf_counter() - t0
        info["seconds"] = seconds
        self.store.set_stage(stage, ih, "done", seconds, info)
        self.results[stage] = info
        self.ran.append(stage)
        console.print(f"[green]done {stage}[/green] in {seconds:.1f}s")

    def require(self, *stages: str) -> None:
        for s in stages:
            rec = self.store.stage(s)
            if rec is None or rec["status"] != "done" or not self._outputs_exist(s):
                raise RlaifError(f"stage {s!r} has not run in {self.workdir}; run `rlaif {s} CONFIG` or `rlaif run CONFIG`")

    # ---------------------------------------------------------------- stages
    def stage_sft(self) -> dict:
        from rlaif.train.sft import run_sft

        if self.cfg.policy.skip_sft:
            from rlaif.generate import load_policy

            model, tok = load_policy(self.cfg.policy.model, "cpu")
            model.save_pretrained(self.sft_dir)
            tok.save_pretrained(self.sft_dir)
            info = {"skipped_sft": True}
        else:
            extra = [p.text for p in self.inputs.prompts]
            info = run_sft(self.cfg, self.sft_dir, extra, self.device)
        info["output_hash"] = dir_hash(self.sft_dir)
        return info

    def stage_generate(self) -> dict:
        from rlaif.generate import generate_candidates

        gen_hash = self.input_hash("generate")
        made = generate_candidates(self.store, self.sft_dir, self.output_hash("sft"), gen_hash, self.cfg.generate,
                                   self.cfg.seed, self.device)
        cands = self.store.candidates(gen_hash)
        return {"gen_hash": gen_hash, "new_candidates": made, "candidates": len(cands),
                "output_hash": content_hash([(c.id, c.text) for c in cands])}

    def stage_judge(self) -> dict:
        from rlaif.judges import make_judge
        from rlaif.judges.base import close_judge
        from rlaif.judges.pairwise import judge_pairwise
        from rlaif.judges.run import judge_candidates

        jc = self.cfg.judge
        judge = make_judge(jc, self.device, self.cfg.seed, self.store)
        judge_hash = self.input_hash("judge")
        gen_hash = self.results_of("generate")["gen_hash"]
        try:
            if jc.resolved_method == "pairwise":
                info = judge_pairwise(self.store, judge, self.inputs.constitution, gen_hash, judge_hash, jc.pairs,
                                      jc.principles, self.cfg.seed, jc.batch_size)
            else:
                info = judge_candidates(self.store, judge, self.inputs.constitution, gen_hash, judge_hash, jc.pairs,
                                        jc.temperature, jc.batch_size)
        finally:
            close_judge(judge)
        pairs = self.store.ai_pairs(judge_hash)
        info.update({"judge_hash": judge_hash, "backend": judge.backend, "model": judge.model,
                     "template_hash": judge.template_hash, "constitution_hash": self.inputs.constitution.hash,
                     "output_hash": content_hash([(p["chosen_id"], p["rejected_id"], round(p["confidence"], 6)) for p in pairs])})
        return info

    def stage_mix(self) -> dict:
        from rlaif.mixing import mix, save_pairs

        ai = self.store.ai_pairs(self.results_of("judge")["judge_hash"])
        splits, stats = mix(ai, self.all_human_labels(), self.cfg.mix, self.cfg.seed)
        save_pairs(splits, self.pairs_dir)
        stats["output_hash"] = dir_hash(self.pairs_dir)
        return stats

    def stage_train_rm(self) -> dict:
        from rlaif.train.reward import train_reward_model

        info = train_reward_model(self.cfg, self.pairs_dir, self.rm_dir, self.device)
        info["output_hash"] = dir_hash(self.rm_dir)
        return info

    def stage_train_policy(self) -> dict:
        from rlaif.train.policy import train_policy

        prompts = [p.text for p in self.store.prompts("train")]
        info = train_policy(self.cfg, self.sft_dir, self.pairs_dir, self.rm_dir, prompts, self.policy_dir, self.device)
        # Under `--launcher accelerate` only the main process writes the policy.
        info["output_hash"] = dir_hash(self.policy_dir) if self.policy_dir.exists() else None
        return info

    def stage_eval(self) -> dict:
        from rlaif.report import build_report, write_report

        report = build_report(self)
        write_report(self, report)
        return {"output_hash": content_hash(report["counts"])}

    def results_of(self, stage: str) -> dict:
        if stage in self.results:
            return self.results[stage]
        rec = self.store.stage(stage)
        return rec["info"] if rec else {}


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "rlaif": __version__}
    for name in ("torch", "transformers", "trl", "datasets", "sentence-transformers", "pydantic"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None  # type: ignore[assignment]
    return out


def write_manifest(run: Run) -> None:
    c = run.inputs.constitution
    judge = run.results_of("judge")
    manifest = {
        "name": run.cfg.name,
        "config_source": run.cfg.source,
        "config_hash": run.cfg.hash,
        "config": run.cfg.model_dump(mode="json"),
        "constitution": {"name": c.name, "version": c.version, "hash": c.hash,
                         "principles": {p.id: p.hash for p in c.principles}},
        "judge": {k: judge.get(k) for k in ("backend", "model", "template_hash", "judge_hash")},
        "input_files": run.inputs.file_hashes,
        "stages": {s: {k: v for k, v in (rec or {}).items() if k != "info"} | {"output_hash": (rec or {}).get("info", {}).get("output_hash")}
                   for s, rec in run.store.stages().items()},
        "mix": {k: v for k, v in run.results_of("mix").items() if k != "seconds"},
        "versions": package_versions(),
        "device": run.device,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = run.workdir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str))
    tmp.replace(run.workdir / "manifest.json")


def open_run(cfg: PipelineConfig, workdir: str | None = None) -> Run:
    """Validate every input, then (and only then) create the run directory."""
    inputs = load_inputs(cfg)
    wd = Path(workdir or cfg.workdir or Path("runs") / cfg.name)
    if wd.exists() and not wd.is_dir():
        raise RlaifError(f"{wd}: exists and is not a directory; pick another --workdir")
    from rlaif.train.common import pick_device

    device = pick_device(cfg.device)
    wd.mkdir(parents=True, exist_ok=True)
    from rlaif import runlock

    lock = runlock.acquire(wd)  # one writer per run directory, held until the command ends
    run = Run(cfg, wd, inputs, device, Store(wd / "store.sqlite"))
    run.lock = lock
    run.store.put_prompts(inputs.prompts)
    # File labels are re-read every run (an edited file replaces its old labels); viewer labels stay.
    with run.store.db:
        run.store.db.execute("DELETE FROM human_labels WHERE source LIKE 'file:%'")
    run.store.add_human_labels(inputs.human_labels)
    return run


def run_pipeline(cfg: PipelineConfig, stages: tuple[str, ...] = STAGES, workdir: str | None = None,
                 force: bool = False) -> Run:
    from rlaif.train.common import quiet_hf

    run = open_run(cfg, workdir)
    quiet_hf()
    try:
        for s in stages:
            run.run_stage(s, force=force)
    finally:
        write_manifest(run)
        run.store.close()
        run.lock.release()
    return run
