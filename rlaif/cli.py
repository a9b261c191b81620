"""The `rlaif` command line.

argparse (stdlib) rather than typer/click: nothing to import at start-up,
so `rlaif --help` and `rlaif constitution lint` stay fast; heavy libraries
load inside the stage that needs them.
"""

from __future__ import annotations

import argparse
import json
import sys

from rlaif import __version__, stages
from rlaif.errors import RlaifError


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline YAML (e.g. pipelines/quickstart.yaml)")
    p.add_argument("--workdir", help="run directory (default: the config's workdir, else runs/<name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set generate.num_candidates=2 (repeatable)")
    p.add_argument("--force", action="store_true", help="re-run the stage(s) even if inputs are unchanged")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlaif", description="Turn a written constitution into training signal.")
    parser.add_argument("--version", action="version", version=f"rlaif {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run every pipeline stage (skipping those whose inputs are unchanged)")
    _add_config_args(p)
    p.add_argument("--rounds", default=None, metavar="N",  # checked with the config (exit 2 naming rounds)
                   help="iterative rounds (overrides the config's rounds): sample, judge and train again from "
                        "each round's policy")
    for stage in stages.STAGES:
        p = sub.add_parser(stage.name, help=f"run the {stage.name} stage only")
        _add_config_args(p)
        if stage.launchable:
            p.add_argument("--launcher", choices=["accelerate"],
                           help="run the stage under `accelerate launch` (several GPUs or CPU processes)")
            p.add_argument("--num-processes", type=int, default=None, metavar="N",
                           help="with --launcher: processes to start (default: the config file's, else 1)")
            p.add_argument("--accelerate-config", metavar="FILE",
                           help="with --launcher: an accelerate config (configs/accelerate/{ddp,fsdp,zero3,cpu_gloo}.yaml)")

    c = sub.add_parser("constitution", help="lint, show or import constitution files")
    csub = c.add_subparsers(dest="action", metavar="ACTION")
    lint = csub.add_parser("lint", help="validate constitution files (exit 2 on problems)")
    lint.add_argument("files", nargs="+")
    show = csub.add_parser("show", help="render a constitution")
    show.add_argument("file")
    imp = csub.add_parser("import", help="convert another project's principle file")
    imp.add_argument("file")
    imp.add_argument("--format", required=True, choices=["llm-swarm"])
    imp.add_argument("-o", "--output", required=True)
    imp.add_argument("--name", help="constitution name (default: the input file's stem)")
    dif = csub.add_parser("diff", help="principles added, removed or changed; with --run, what a re-judge costs "
                                       "and which AI labels it changed")
    dif.add_argument("old", metavar="OLD.yaml")
    dif.add_argument("new", metavar="NEW.yaml")
    dif.add_argument("--run", dest="run_dir", metavar="DIR", help="a run directory judged with OLD (or NEW)")
    dif.add_argument("--json", dest="json_out", action="store_true", help="print the diff as JSON (for scripts)")

    e = sub.add_parser("eval-judge", help="agreement of the judge with human pairwise labels")
    e.add_argument("--pairs", required=True, help="JSONL with prompt, response_a, response_b, label (A|B|tie)")
    e.add_argument("--constitution", required=True)
    e.add_argument("--backend", default=None, help="shorthand for --judge.backend (default embedding)")
    e.add_argument("--model", default=None, help="shorthand for --judge.model (default minilm)")
    e.add_argument("--config", help="take the judge section of this pipeline config")
    e.add_argument("--limit", type=int, help="first N pairs only")
    e.add_argument("--category", help="prompt category of the whole file (e.g. harmful): selects principles "
                                      "by their applies_to; default: every principle applies")
    e.add_argument("--json", dest="json_out", help="also write the figures to this JSON file")
    e.epilog = "Any judge field can be set as --judge.FIELD=VALUE (e.g. --judge.base_url=http://127.0.0.1:8000/v1)."

    # Commands that live with their feature; each module's add_parsers must stay
    # import-light and set `handler=` on its parsers.
    from rlaif.viewer.commands import add_parsers as add_viewer_parsers

    add_viewer_parsers(sub)
    return parser


def _cmd_constitution(args) -> int:
    from rlaif.constitution import lint_constitution

    if args.action == "lint":
        bad = 0
        for f in args.files:
            c, problems = lint_constitution(f)
            for line in problems:
                print(line, file=sys.stderr)
            if c is None:
                bad += 1
            else:
                print(f"{f}: ok ({len(c.principles)} principles, hash {c.hash})")
        return 2 if bad else 0
    if args.action == "show":
        from rlaif.constitution import load_constitution
        from rlaif.show_constitution import render

        render(load_constitution(args.file))
        return 0
    if args.action == "import":
        from pathlib import Path

        from rlaif.constitution import dump_constitution, import_llm_swarm
        from rlaif.outputs import disk_full, write_whole

        c = import_llm_swarm(args.file, args.name)
        out = Path(args.output)
        text = (f"# Imported by `rlaif constitution import --format {args.format}` from {Path(args.file).name}\n"
                + dump_constitution(c))
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            write_whole(out, text)
        except OSError as e:
            if disk_full(e):
                raise
            raise RlaifError(f"{out}: cannot write the constitution ({e.strerror or e}); "
                             "give -o a file path in a writable directory") from None
        print(f"wrote {out} ({len(c.principles)} principles, hash {c.hash})")
        return 0
    if args.action == "diff":
        return _cmd_constitution_diff(args)
    raise RlaifError("usage: rlaif constitution {lint,show,import,diff} ...")


def _cmd_constitution_diff(args) -> int:
    from rlaif.constitution import load_constitution
    from rlaif.constitution_diff import diff_constitutions, render_diff

    old, new = load_constitution(args.old), load_constitution(args.new)
    d = diff_constitutions(old, new)
    effects = None
    if args.run_dir:
        from rlaif.rejudge import run_effects

        effects = run_effects(d, new, args.new, args.run_dir)
    if args.json_out:
        print(json.dumps(d.to_dict() | ({"run": effects} if effects else {}), indent=2))
        return 0
    render_diff(d, effects)
    if effects:
        cost = effects["rejudge_cost_usd"]
        print(f"re-judge with {effects['judge']['backend']}:{effects['judge']['model']}: {effects['rejudge_calls']} "
              f"calls not in the run's cache (of {effects['calls_without_cache']})"
              + (f", about ${cost:.4f} at the configured prices" if cost is not None else ""))
        lab = effects["labels"]
        if lab.get("available"):
            print(f"AI pairs: {lab['flipped']} flipped, {lab['appeared']} appeared, {lab['disappeared']} disappeared "
                  f"({lab['pairs_old']} under OLD, {lab['pairs_new']} under NEW)")
        else:
            print(lab["reason"])
    return 0


def _cmd_pipeline(args) -> int:
    if getattr(args, "launcher", None) == "accelerate":
        from rlaif.launch import launch

        return launch(args)
    if getattr(args, "num_processes", None) is not None or getattr(args, "accelerate_config", None):
        raise RlaifError("--num-processes and --accelerate-config go with --launcher accelerate")
    from rlaif.config import load_config
    from rlaif.pipeline import run_pipeline
    from rlaif.progress import console

    rounds = getattr(args, "rounds", None)
    cfg = load_config(args.config, args.overrides + ([f"rounds={rounds}"] if rounds is not None else []))
    names = stages.NAMES if args.command == "run" else (args.command,)
    if cfg.rounds > 1 and args.command == "run":  # a one-stage command acts on round 1 (the run directory)
        from rlaif.rounds import run_rounds

        run = run_rounds(cfg, names, args.workdir, force=args.force)[0]
        if "eval" in names:
            console.print(f"rounds: {run.layout.rounds_md}")
    else:
        run = run_pipeline(cfg, names, args.workdir, force=args.force)
    if "eval" in names:
        console.print(f"report: {run.layout.report_md} (figures in {run.layout.report_json})")
    else:
        console.print(f"run directory: {run.workdir}")
    return 0


def judge_config_from_args(args, extra: list[str]):
    """JudgeConfig from --config's judge section, then --backend/--model, then --judge.* overrides."""
    from pydantic import ValidationError

    from rlaif.config import JudgeConfig, apply_overrides, load_config

    base: dict = {}
    if args.config:
        base = load_config(args.config).judge.model_dump(exclude_unset=True)
    base["constitution"] = args.constitution
    if args.backend:
        base["backend"] = args.backend
    if args.model:
        base["model"] = args.model
    items = []
    it = iter(extra)
    for tok in it:
        if not tok.startswith("--judge."):
            raise RlaifError(f"unknown argument {tok!r}; judge fields are set as --judge.FIELD=VALUE")
        key, eq, value = tok[len("--judge."):].partition("=")
        if not eq:
            value = next(it, None)
            if value is None:
                raise RlaifError(f"{tok}: missing value")
        items.append(f"{key}={value}")
    apply_overrides(base, items)
    try:
        return JudgeConfig.model_validate(base)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(map(str, err["loc"]))
        raise RlaifError(f"--judge.{field}: {err['msg']}") from None


def _cmd_eval_judge(args, extra: list[str]) -> int:
    from rich.table import Table

    from rlaif.eval_judge import eval_judge

    jcfg = judge_config_from_args(args, extra)
    if args.json_out:
        from pathlib import Path

        from rlaif.outputs import check_target

        check_target(Path(args.json_out), "--json")  # a bad --json is exit 2 before the judge runs
    r = eval_judge(args.pairs, jcfg, args.limit, category=args.category)
    t = Table(title=f"judge {r['backend']}:{r['model']} ({r['method']}) vs human labels ({r['constitution']})")
    for col in ("scope", "accuracy (non-tie)", "kappa", "n"):
        t.add_column(col)
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    t.add_row("all principles", fmt(r["accuracy"]), fmt(r["kappa"]), str(r["n"]))
    for pid, a in r["per_principle"].items():
        t.add_row(pid, fmt(a["accuracy"]), fmt(a["kappa"]), str(a["n"]))
    from rich.console import Console

    Console().print(t)
    pc = r.get("position_consistency")
    print(f"pairs {r['pairs']}, human ties {r['human_ties']}, judge ties {r['judge_ties']}, "
          f"unscored {r['unscored']}, position consistency {fmt(pc)}, calls {r.get('calls')}")
    if args.json_out:
        from rlaif.outputs import write_json

        write_json(r, args.json_out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "eval-judge":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if getattr(args, "handler", None) is not None:
            return args.handler(args)
        if args.command == "constitution":
            if args.action is None:
                parser.parse_args(["constitution", "--help"])
            return _cmd_constitution(args)
        if args.command == "eval-judge":
            return _cmd_eval_judge(args, extra)
        return _cmd_pipeline(args)
    except RlaifError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # a full disk outside a pipeline run (inside one, rlaif/pipeline.py names the run)
        import sqlite3

        from rlaif.outputs import disk_full
        from rlaif.store import Store, is_busy

        if isinstance(e, sqlite3.OperationalError) and is_busy(e):  # committed work stays; the command can re-run
            print(f"error: the run store is busy: another process kept its write lock for {Store.BUSY_TIMEOUT:g} s "
                  "(a `labels import` copying in a large file, a stage writing; a viewer only waits briefly); what "
                  "was committed is kept; run the command again", file=sys.stderr)
            return 1
        if not disk_full(e):
            raise
        print(f"error: disk full ({type(e).__name__}: {str(e)[:160]}); free space and re-run", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
