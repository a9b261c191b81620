"""The pipeline: the stages of rlaif/stages.py in order, each skipped when its inputs are unchanged.

Every stage has an input hash (its config section, the content hashes of
the files it reads, and the output hashes of the stages before it). A stage
whose recorded input hash matches and whose output exists is skipped. A
killed stage is redone on the next run, resuming from what it committed
(candidates and judge calls per batch, trainer checkpoints).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from rlaif import __version__, stages
from rlaif.chat import with_system_all
from rlaif.config import PipelineConfig
from rlaif.constitution import Constitution, load_constitution
from rlaif.errors import RlaifError
from rlaif.hashing import content_hash, file_hash
from rlaif.layout import RunLayout
from rlaif.records import Feedback, HumanLabel, Prompt, load_label_file, load_prompts, load_sft
from rlaif.store import Store
from rlaif.vocab import FILE, file_source


@dataclass
class Inputs:
    """Everything read from user files, validated before anything is written."""

    prompts: list[Prompt]
    constitution: Constitution
    human_labels: list[HumanLabel]
    file_hashes: dict[str, str]
    feedback: list[Feedback] = field(default_factory=list)  # thumbs, ratings, rankings (rlaif/feedback.py)


def split_prompts(prompts: list[Prompt], fraction: float, seed: int, limit: int | None) -> list[Prompt]:
    prompts = prompts[:limit] if limit else prompts
    out = []
    for p in prompts:
        held = int(content_hash([seed, "eval-split", p.id], 8), 16) / 0xFFFFFFFF < fraction
        out.append(Prompt(p.id, p.text, p.category, "eval" if held else "train"))
    return out


def load_inputs(cfg: PipelineConfig) -> Inputs:
    prompts = split_prompts(with_system_all(load_prompts(cfg.data.prompts), cfg.data.system_prompt),
                             cfg.data.eval_fraction, cfg.seed, cfg.data.max_prompts)
    constitution = load_constitution(cfg.judge.constitution)
    labels: list[HumanLabel] = []
    feedback: list[Feedback] = []
    hashes = {"prompts": file_hash(cfg.data.prompts)}
    for path in cfg.mix.human_labels:
        name = Path(path).name
        pairs, singles = load_label_file(path)
        labels += [replace(h, source=file_source(h.source)) for h in with_system_all(pairs, cfg.data.system_prompt)]
        feedback += [replace(f, source=file_source(f.source)) for f in with_system_all(singles, cfg.data.system_prompt)]
        hashes[f"labels:{name}"] = file_hash(path)
    if cfg.eval.prompts:  # checked up front with the other inputs (read again by eval)
        load_prompts(cfg.eval.prompts)
        hashes["eval_prompts"] = file_hash(cfg.eval.prompts)
    if cfg.policy.sft_data:
        load_sft(cfg.policy.sft_data)
        hashes["sft_data"] = file_hash(cfg.policy.sft_data)
    if cfg.critique.enabled:  # a reviser that cannot write text is refused before the run directory exists
        from rlaif.critique import check_reviser

        check_reviser(cfg)
        if cfg.critique.examples:
            from rlaif.constitution import llm_swarm_dialogues

            llm_swarm_dialogues(cfg.critique.examples)
            hashes["critique_examples"] = file_hash(cfg.critique.examples)
    if not any(p.split == "train" for p in prompts):
        raise RlaifError(f"{cfg.data.prompts}: no training prompts left after data.eval_fraction; lower it")
    return Inputs(prompts, constitution, labels, hashes, feedback)


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RlaifError("device: 'cuda' asked for but no CUDA GPU is visible; use device: auto or cpu")
    return name


@dataclass
class Run:
    """One run directory: its config, inputs, store and layout. The stages themselves are declared
    in rlaif/stages.py; this class decides whether one runs, runs it and records it."""

    cfg: PipelineConfig
    layout: RunLayout
    inputs: Inputs
    device: str = "cpu"
    store: Store | None = None
    results: dict[str, dict] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    round: object = None  # rounds.RoundContext in round k >= 2 of an iterative run (rlaif/rounds.py)

    @property
    def workdir(self) -> Path:
        return self.layout.root

    # ---------------------------------------------------------------- hashes
    def output_hash(self, stage: str) -> str:
        rec = self.store.stage(stage)
        if rec is None or rec["status"] != "done":
            return "missing"
        return rec["info"].get("output_hash", rec["input_hash"])

    def input_hash(self, stage: str) -> str:
        """The seed, the version, the output hashes of the stages it needs and its own inputs."""
        s = stages.get(stage)
        parts = {need: self.output_hash(need) for need in s.needs(self.cfg)} | s.hash_parts(self)
        return content_hash({"stage": stage, "seed": self.cfg.seed, "version": __version__, **parts})

    def all_human_labels(self) -> list[HumanLabel]:
        """The run's human labels; in round k >= 2 of an iterative run, with those given in earlier rounds."""
        from rlaif.rounds import earlier_human_labels

        return earlier_human_labels(self) + self.store.human_labels()

    def all_feedback(self) -> list[Feedback]:
        from rlaif.rounds import earlier_feedback

        return earlier_feedback(self) + self.store.feedback()

    def policy_eval_prompts(self) -> list:
        """The prompts the policy is evaluated on: eval.prompts when set (new phrasings and topics), else the
        data.eval_fraction split; at most eval.max_prompts."""
        if self.cfg.eval.prompts:
            from rlaif.chat import with_system_all
            from rlaif.records import load_prompts

            prompts = with_system_all(load_prompts(self.cfg.eval.prompts), self.cfg.data.system_prompt)
        else:
            prompts = self.store.prompts("eval")
        return prompts[: self.cfg.eval.max_prompts]

    def policy_eval_units(self) -> frozenset[str]:
        """``mixing.prompt_unit`` of each policy-eval prompt: the mix trains nothing on them."""
        from rlaif.mixing import prompt_unit

        return frozenset(prompt_unit(p.text) for p in self.policy_eval_prompts())

    def human_split(self):
        """(train, held-out) human preference pairs exactly as the mix splits them (the agreement gate, the
        weight fit)."""
        from rlaif.mixing import human_split

        return human_split(self.all_human_labels(), self.all_feedback(), self.cfg.mix, self.cfg.seed,
                           self.policy_eval_units())

    # ---------------------------------------------------------------- running
    def outputs_exist(self, stage: str) -> bool:
        """The stage's marker file exists and every file recorded when it finished is intact."""
        from rlaif.outputs import intact

        s = stages.get(stage)
        path = s.output_path(self.layout)
        if path is None:
            return True
        rec = self.store.stage(stage)
        return path.exists() and intact(s.output_root(self.layout), ((rec or {}).get("info") or {}).get("output_files"))

    def require(self, *names: str) -> None:
        for s in names:
            rec = self.store.stage(s)
            if rec is None or rec["status"] != "done" or not self.outputs_exist(s):
                raise RlaifError(f"stage {s!r} has not run in {self.workdir}; run `rlaif {s} CONFIG` or `rlaif run CONFIG`")

    def should_run(self, stage: str, force: bool = False) -> bool:
        """Whether ``stage`` must run: raises RlaifError when a stage it needs has not run; False
        (printing the skip and taking the recorded results) when its recorded input hash matches
        and its output exists, unless ``force``."""
        from rlaif.progress import console

        self.require(*stages.get(stage).needs(self.cfg))
        ih = self.input_hash(stage)
        rec = self.store.stage(stage)
        if not force and rec and rec["status"] == "done" and rec["input_hash"] == ih and self.outputs_exist(stage):
            failed = (rec["info"] or {}).get("failed_calls") or 0
            if failed:  # calls that failed after their retries are not cached: a re-run makes just those again
                console.print(f"[yellow]{stage}: {failed} call(s) failed last time (server errors, timeouts); "
                              "running it again: the calls that succeeded are cached[/yellow]")
                return True
            console.print(f"[dim]skip {stage}: inputs unchanged ({ih})[/dim]")
            self.results[stage] = rec["info"]
            self.skipped.append(stage)
            return False
        return True

    def check_gate(self, stage: str, force: bool) -> dict | None:
        """The agreement gate of a training stage (rlaif/gate.py): None when off or not gated; raises
        RlaifError when the judge agrees too little with the held-out human labels, unless ``force``."""
        if not stages.get(stage).gated:
            return None
        from rlaif.gate import check_gate

        return check_gate(self, stage, force)

    def run_stage(self, stage: str, force: bool = False, explicit: bool = False) -> None:
        from rlaif.progress import console

        if not stages.get(stage).enabled(self.cfg):
            if explicit:
                raise RlaifError(f"stage {stage!r} is off in this config; set {stage}.enabled: true "
                                 f"(or --set {stage}.enabled=true)")
            console.print(f"[dim]skip {stage}: off ({stage}.enabled: false)[/dim]")
            return
        if not self.should_run(stage, force):
            return
        gate = self.check_gate(stage, force)
        ih = self.input_hash(stage)
        console.print(f"[bold cyan]{stage}[/bold cyan] ...")
        self.store.set_stage(stage, ih, "running")
        from rlaif.train.checkpoints import prepare_stage

        prepare_stage(self, stage, ih)  # no resume from another config's or a half-saved checkpoint
        t0 = time.perf_counter()
        from rlaif.judges.errors import JudgeFatalError
        from rlaif.judges.llm import BudgetExceeded

        try:
            info = stages.get(stage).run(self)
        except JudgeFatalError as e:  # wrong key, no access, unknown model: finished calls are cached
            self.store.set_stage(stage, ih, "stopped", time.perf_counter() - t0, {"reason": str(e)})
            raise
        except BudgetExceeded as e:
            self.store.set_stage(stage, ih, "stopped", time.perf_counter() - t0, {"reason": str(e)})
            raise RlaifError(f"{stage} stopped: {e}; completed calls are cached, raise the budget and "
                             "re-run to resume", exit_code=3) from None
        seconds = time.perf_counter() - t0
        info["seconds"] = seconds
        if gate is not None:
            info["agreement_gate"] = gate
        from rlaif.outputs import manifest

        root = stages.get(stage).output_root(self.layout)
        if root is not None:  # checked by outputs_exist: a deleted or cut file re-runs the stage
            info["output_files"] = manifest(root)
        self.store.set_stage(stage, ih, "done", seconds, info)
        self.results[stage] = info
        self.ran.append(stage)
        console.print(f"[green]done {stage}[/green] in {seconds:.1f}s")

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
    from rlaif.chat import saved_template_hash
    from rlaif.rounds import provenance

    c = run.inputs.constitution
    judge = run.results_of("judge")
    manifest = {
        "name": run.cfg.name,
        "config_source": run.cfg.source,
        "config_hash": run.cfg.hash,
        "config": run.cfg.model_dump(mode="json"),
        **provenance(run),  # which round of an iterative run this directory is (rlaif/rounds.py)
        "constitution": {"name": c.name, "version": c.version, "hash": c.hash,
                         "principles": {p.id: p.hash for p in c.principles}},
        "judge": {k: judge.get(k) for k in ("backend", "model", "template_hash", "judge_hash", "fitted_weights")},
        # the policy: what it started from, its chat template, and who sampled the candidates (local or served)
        "policy": {"model": run.cfg.policy.model, "chat_template_hash": saved_template_hash(run.layout.sft),
                   "candidates_sampled_by": run.results_of("generate").get("sampled_by")},
        "input_files": run.inputs.file_hashes,
        "stages": {s: {k: v for k, v in (rec or {}).items() if k != "info"}
                   | {"output_hash": (rec or {}).get("info", {}).get("output_hash")}
                   for s, rec in run.store.stages().items()},
        "mix": {k: v for k, v in run.results_of("mix").items() if k != "seconds"},
        "versions": package_versions(),
        "device": run.device,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    from rlaif.outputs import write_whole

    write_whole(run.layout.manifest, json.dumps(manifest, indent=2, sort_keys=False, default=str))


def open_run(cfg: PipelineConfig, workdir: str | None = None, round_ctx=None) -> Run:
    """Validate every input, then (and only then) create the run directory."""
    inputs = load_inputs(cfg)
    layout = RunLayout.for_run(cfg.workdir, cfg.name, workdir)
    wd = layout.root
    if wd.exists() and not wd.is_dir():
        raise RlaifError(f"{wd}: exists and is not a directory; pick another --workdir")
    device = pick_device(cfg.device)
    wd.mkdir(parents=True, exist_ok=True)
    from rlaif import runlock

    lock = runlock.acquire(wd)  # one writer per run directory, held until the command ends
    run = Run(cfg, layout, inputs, device, Store(layout.store, check=True), round=round_ctx)
    run.lock = lock
    if round_ctx is not None:  # a round >= 2 pays no judge call an earlier round paid (rlaif/rounds.py)
        run.store.read_cache_also(lay.store for lay in round_ctx.earlier)
    run.store.put_prompts(inputs.prompts)
    # File labels are re-read every run (an edited file replaces its old labels); viewer labels stay.
    run.store.delete_human_labels_from(FILE)
    run.store.add_human_labels(inputs.human_labels)
    run.store.add_feedback(inputs.feedback)
    from rlaif.viewer.journal import replay

    replay(layout, run.store)  # verdicts a viewer kept while the store was busy and ended before saving
    return run


def run_pipeline(cfg: PipelineConfig, names: tuple[str, ...] = stages.NAMES, workdir: str | None = None,
                 force: bool = False, round_ctx=None, keep_lock: bool = False) -> Run:
    """Run ``names`` in order (each skipped when unchanged, unless ``force``); ``round_ctx``: the
    rounds.RoundContext of round k >= 2; ``keep_lock``: on success the run directory's lock stays
    held (``run.lock``; the caller releases it: the rounds after round 1 read and write its directory)."""
    from rlaif.train.hf import quiet_hf

    run = open_run(cfg, workdir, round_ctx)
    quiet_hf()
    done = False
    try:
        for s in names:
            try:
                run.run_stage(s, force=force, explicit=len(names) == 1)
            except Exception as e:
                from rlaif.outputs import disk_full

                if not disk_full(e) or isinstance(e, RlaifError):
                    raise
                raise RlaifError(f"{run.workdir}: disk full during {s} ({type(e).__name__}); free space and "
                                 "re-run the same command to resume", exit_code=1) from None
        done = True
    finally:
        write_manifest(run)
        run.store.close()
        if not (keep_lock and done):
            run.lock.release()
    return run
