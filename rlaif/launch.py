"""Training stages under ``accelerate launch``: many GPUs (DDP, FSDP, DeepSpeed) or several CPU processes.

    rlaif train-rm CONFIG --launcher accelerate --num-processes 8 --accelerate-config configs/accelerate/ddp.yaml
    rlaif train-policy CONFIG --launcher accelerate --num-processes 2 --accelerate-config configs/accelerate/cpu_gloo.yaml

The command re-executes itself:

    python -m accelerate.commands.launch [--config_file F] [--num_processes N] -m rlaif STAGE CONFIG ... --launcher accelerate

with ``RLAIF_LAUNCH_CHILD=1`` in the environment. Before launching, the parent validates the
inputs, checks that the stages before are done, and skips the stage when its inputs are unchanged
(as ``rlaif STAGE`` does), so no process is started for nothing.

In the children the training code is unchanged (trl/transformers trainers and rlaif's PPO read
the distributed environment ``accelerate launch`` sets):

- the main process (``RANK`` 0) runs the stage as ``rlaif STAGE`` would: it records the stage in
  the run store, writes the model to its place and the manifest;
- every other process runs the same stage function on a private scratch copy of the stage's
  output folder (``WORKDIR/.rank<k>/``), whose ``checkpoints`` folder is a link to the main
  process's, so trainer checkpoints (and their per-process RNG files) are shared and a killed run
  resumes on every process; it writes nothing to the store, and its scratch folder is removed
  when it finishes. The final model is therefore written once, by the main process.

On a machine without a GPU, ``configs/accelerate/cpu_gloo.yaml`` (or no config file) starts the
processes with torchrun and ``ACCELERATE_USE_CPU=true``: they form a gloo process group
(accelerate's ``MULTI_CPU``; its own MULTI_CPU launcher needs ``mpirun``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from rlaif import stages
from rlaif.errors import RlaifError
from rlaif.layout import RunLayout
from rlaif.stages import LAUNCHABLE

CHILD_ENV = "RLAIF_LAUNCH_CHILD"


def launch(args) -> int:
    """``rlaif STAGE CONFIG --launcher accelerate ...``: the parent launches, a child runs its share."""
    if args.command not in LAUNCHABLE:
        raise RlaifError(f"--launcher accelerate: only {', '.join(LAUNCHABLE)} run under accelerate")
    if args.num_processes is not None and args.num_processes < 1:
        raise RlaifError("--num-processes: must be >= 1")
    if os.environ.get(CHILD_ENV) == "1":
        return run_child(args)
    return run_parent(args)


# ------------------------------------------------------------------ parent
def _accelerate_config(path: str | None) -> dict:
    if not path:
        return {}
    import yaml

    p = Path(path)
    if not p.is_file():
        raise RlaifError(f"--accelerate-config {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise RlaifError(f"--accelerate-config {path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise RlaifError(f"--accelerate-config {path}: expected a mapping (an `accelerate config` file)")
    return data


def build_command(args, use_cpu: bool, acc_cfg: dict) -> list[str]:
    """The ``accelerate launch`` command line that re-runs this stage in N processes."""
    n = args.num_processes
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if args.accelerate_config:
        cmd += ["--config_file", str(Path(args.accelerate_config).resolve())]
        if n is not None:
            cmd += ["--num_processes", str(n)]
    else:
        n = n or 1
        cmd += ["--num_processes", str(n), "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--main_process_port", "0"]
        if n > 1:
            cmd.append("--multi_gpu")  # torchrun; with ACCELERATE_USE_CPU the processes join a gloo group
    cmd += ["-m", "rlaif", args.command, str(Path(args.config).resolve()), "--launcher", "accelerate"]
    if args.workdir:
        cmd += ["--workdir", str(Path(args.workdir).resolve())]
    for item in args.overrides:
        cmd += ["--set", item]
    if args.force:
        cmd.append("--force")
    return cmd


def run_parent(args) -> int:
    from rlaif.config import load_config
    from rlaif.pipeline import open_run
    from rlaif.progress import console

    cfg = load_config(args.config, args.overrides)
    acc_cfg = _accelerate_config(args.accelerate_config)
    stage = args.command
    run = open_run(cfg, args.workdir)  # validates every input before anything is launched
    try:
        if not run.should_run(stage, args.force):  # the skip rule of `rlaif STAGE`
            return 0
        run.check_gate(stage, args.force)  # before any process starts (the main one records it)
        layout = RunLayout(run.workdir.resolve())
        device = run.device
        ih = run.input_hash(stage)
    finally:
        run.store.close()
    # The shared checkpoint folder the other processes link to.
    from rlaif.train.checkpoints import prepare

    # before any worker starts: stale or half-saved checkpoints go
    prepare(layout.checkpoints(layout.output(stages.get(stage).output)), ih)
    use_cpu = device == "cpu" or bool(acc_cfg.get("use_cpu"))
    if args.workdir is None:
        args.workdir = str(layout.root)
    cmd = build_command(args, use_cpu, acc_cfg)
    env = dict(os.environ, **{CHILD_ENV: "1"})
    if use_cpu:
        env["ACCELERATE_USE_CPU"] = "true"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    console.print(f"[bold cyan]{stage}[/bold cyan] under accelerate: {' '.join(cmd[2:])}")
    proc = subprocess.run(cmd, env=env)
    if proc.returncode in (130, -2):
        raise KeyboardInterrupt
    if proc.returncode != 0:
        raise RlaifError(f"{stage} under accelerate launch failed (exit {proc.returncode}); see the output above",
                         exit_code=1)
    return 0


# ------------------------------------------------------------------ children
def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _worker_run(cfg, main: RunLayout, stage: str, rank: int):
    """A Run for a non-main process: reads the run store, writes only under its scratch folder."""
    from rlaif.pipeline import Run, load_inputs, pick_device
    from rlaif.store import Store

    output = stages.get(stage).output
    layout = main.for_worker(rank, output)
    scratch = main.scratch(rank)
    shutil.rmtree(scratch, ignore_errors=True)
    link = layout.checkpoints(layout.output(output))
    link.parent.mkdir(parents=True)
    link.symlink_to(main.checkpoints(main.output(output)), target_is_directory=True)
    run = Run(cfg, layout, load_inputs(cfg), pick_device(cfg.device), Store(main.store))
    return run, scratch


def run_child(args) -> int:
    from rlaif.config import load_config
    from rlaif.pipeline import run_pipeline

    cfg = load_config(args.config, args.overrides)
    stage = args.command
    rank = _rank()
    if rank == 0:
        # The parent already decided the stage must run; the other processes run it too.
        run_pipeline(cfg, (stage,), args.workdir, force=True)
        return 0
    from rlaif.train.hf import quiet_hf

    quiet_hf()
    main = RunLayout.for_run(cfg.workdir, cfg.name, args.workdir)
    run, scratch = _worker_run(cfg, RunLayout(main.root.resolve()), stage, rank)
    try:
        stages.get(stage).run(run)
    finally:
        run.store.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0
