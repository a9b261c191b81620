"""CLI commands of the viewer feature: `view`, `show`, `labels {stats,export,import}`.

Kept import-light: textual and rich load inside the handlers, and nothing
here (or in the viewer) imports torch, transformers, trl or datasets.
"""

from __future__ import annotations

import argparse

from rlaif.vocab import AI, FILE, HUMAN, IMPORT, VIEWER


def _add_queue_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holds store.sqlite), e.g. runs/quickstart")
    p.add_argument("--order", choices=["review", "random"], default="review",
                   help="review: order-inconsistent, low confidence, disagreeing principles first (default); "
                        "random: a seeded sample, for unbiased agreement estimates")
    p.add_argument("--seed", type=int, default=0, help="seed of --order random (default 0)")
    p.add_argument("--principle", help="only comparisons judged on this principle id")
    p.add_argument("--status", choices=["unreviewed", "reviewed", "unscored"],
                   help="unreviewed: scored, no human label; reviewed: has a human label; unscored: no AI verdict")
    p.add_argument("--source", help="only comparisons with a human label whose source starts with this "
                                    f"(e.g. {VIEWER}, {VIEWER}alice, {FILE}, {IMPORT})")
    p.add_argument("--category", help="only prompts of this category")
    p.add_argument("--search", help="case-insensitive text in the prompt, answers, rationales or notes")
    p.add_argument("--low-confidence", type=float, default=0.6, metavar="P",
                   help="confidence below which a verdict counts as low confidence (default 0.6)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this feature's subcommands; each sets ``handler=fn(args) -> int``."""
    v = sub.add_parser("view", help="spot-check AI labels in the terminal; verdicts become human labels")
    _add_queue_args(v)
    v.add_argument("--annotator", help="your name on the labels (default: $USER)")
    v.add_argument("--rate", action="store_true",
                   help="rate one response at a time (thumbs up/down or 1-5, n: comment) instead of comparing two; "
                        "stored as human feedback")
    v.set_defaults(handler=cmd_view)

    s = sub.add_parser("show", help="print a run's AI-labelled comparisons (non-interactive)")
    _add_queue_args(s)
    s.add_argument("--limit", type=int, default=20, help="at most N comparisons (default 20; 0 = all)")
    s.set_defaults(handler=cmd_show)

    lab = sub.add_parser("labels", help="human-label statistics, export and import")
    lsub = lab.add_subparsers(dest="action", metavar="ACTION", required=True)
    st = lsub.add_parser("stats", help="label counts by source; AI-human agreement and kappa")
    st.add_argument("run_dir", metavar="RUN_DIR")
    st.add_argument("--json", dest="json_out", help="also write the figures to this JSON file")
    st.set_defaults(handler=cmd_labels_stats)
    ex = lsub.add_parser("export", help="write human and/or AI labels to a file")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("--source", choices=[HUMAN, AI, "all"], default=HUMAN,
                    help="all = human labels + the AI pairs no human label covers (default human)")
    ex.add_argument("--format", choices=["jsonl", "trl", "parquet"], default="jsonl",
                    help="jsonl: every field; trl: {prompt, chosen, rejected} preferences only; parquet")
    ex.add_argument("-o", "--output", required=True, metavar="FILE")
    ex.set_defaults(handler=cmd_labels_export)
    im = lsub.add_parser("import", help="add human labels from a TRL / A/B JSONL (or exported) file")
    im.add_argument("file", metavar="FILE")
    im.add_argument("run_dir", metavar="RUN_DIR")
    im.add_argument("--human", action="store_true",
                    help="the labels were made by humans: they may enter the held-out eval split "
                         "(default: imported labels train only)")
    im.set_defaults(handler=cmd_labels_import)


def _load(args, readonly: bool = False):
    """Open the run store and its comparisons, checking the filters; errors are RlaifError."""
    from rlaif.errors import RlaifError
    from rlaif.viewer.queue import Filters, check_principle, load_comparisons, open_run_store

    if not 0.5 <= args.low_confidence <= 1:
        raise RlaifError(f"--low-confidence must be between 0.5 and 1, got {args.low_confidence}")
    store = open_run_store(args.run_dir, readonly=readonly)
    try:
        comps = load_comparisons(store)
        if not comps:
            raise RlaifError(f"{args.run_dir}: the judge made no comparisons (no AI pairs to review)")
        check_principle(comps, args.principle)
        filters = Filters(args.principle, args.status, args.search, args.source, args.category)
    except BaseException:
        store.close()
        raise
    return store, comps, filters


def cmd_view(args) -> int:
    import sys

    from rlaif.errors import RlaifError
    from rlaif.viewer.queue import annotator_name, build_queue

    annotator = annotator_name(args.annotator)
    store, comps, filters = _load(args)
    try:
        if not build_queue(comps, filters, args.order, args.seed, args.low_confidence):
            raise RlaifError(f"no comparisons match the filters ({filters.describe()})")
        if not (sys.stdin.isatty() and sys.stderr.isatty()):  # Textual reads stdin and draws on stderr
            raise RlaifError("`rlaif view` needs an interactive terminal; use `rlaif show RUN_DIR` in pipes and logs")
        if args.rate:
            from rlaif.viewer.rate_app import RateApp
            from rlaif.viewer.rating import responses_of

            RateApp(store, responses_of(build_queue(comps, filters, args.order, args.seed, args.low_confidence)),
                    annotator).run()
            return 0
        from rlaif.viewer.app import ViewerApp

        ViewerApp(store, comps, annotator, filters=filters, order=args.order, seed=args.seed,
                  low_confidence=args.low_confidence).run()
    finally:
        store.close()
    return 0


def cmd_show(args) -> int:
    from rich.console import Console

    from rlaif.viewer.queue import build_queue
    from rlaif.viewer.render import render_panel

    store, comps, filters = _load(args, readonly=True)
    store.close()
    queue = build_queue(comps, filters, args.order, args.seed, args.low_confidence)
    shown = queue[: args.limit] if args.limit and args.limit > 0 else queue
    console = Console()
    console.print(f"{len(queue)} of {len(comps)} comparisons match (filters: {filters.describe()}; "
                  f"order: {args.order}); showing {len(shown)}")
    for i, c in enumerate(shown, 1):
        console.print(render_panel(c, f"{i}/{len(queue)}", args.low_confidence))
    return 0


def cmd_labels_stats(args) -> int:
    import json

    from rich.console import Console

    from rlaif.labels import label_stats, print_stats
    from rlaif.viewer.queue import load_comparisons, open_run_store

    with open_run_store(args.run_dir, readonly=True) as store:
        st = label_stats(store, load_comparisons(store))
    print_stats(st, Console())
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(st, f, indent=2)
    return 0


def cmd_labels_export(args) -> int:
    from rlaif.feedback import feedback_records
    from rlaif.labels import export_records, write_export
    from rlaif.viewer.queue import load_comparisons, open_run_store

    with open_run_store(args.run_dir, readonly=True) as store:
        comps = load_comparisons(store) if args.source != HUMAN else None
        rows = export_records(store, comps, args.source)
        feedback = feedback_records(store.feedback()) if args.source != AI else []
    n, skipped = write_export(rows, args.format, args.output, feedback)
    extra = f"; left out: {', '.join(f'{n} {why}' for why, n in skipped.items())}" if skipped else ""
    print(f"wrote {n} {args.source} labels to {args.output} ({args.format}{extra})")
    return 0


def cmd_labels_import(args) -> int:
    from rlaif.labels import read_labels
    from rlaif.viewer.queue import open_run_store

    labels, feedback = read_labels(args.file, human=args.human)  # validate the whole file before touching the store
    with open_run_store(args.run_dir) as store:
        store.add_human_labels(labels)
        store.add_feedback(feedback)
        total = store.human_label_count()
    fb = f" and {len(feedback)} single-response feedback" if feedback else ""
    print(f"imported {len(labels)} labels{fb} from {args.file} into {args.run_dir} ({total} human labels in the run; "
          "the next `rlaif run`/`mix` uses them)")
    return 0
