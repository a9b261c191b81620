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


def open_queue(args, readonly: bool = False):
    """Open the run store and its review queue as the arguments ask; errors are RlaifError.
    Returns (store, judge hash, filters, queue); the caller closes the store."""
    from rlaif.errors import RlaifError
    from rlaif.viewer.queue import Filters, Queue, check_principle, open_run_store, reading, resolve_judge_hash

    if not 0.5 <= args.low_confidence <= 1:
        raise RlaifError(f"--low-confidence must be between 0.5 and 1, got {args.low_confidence}")
    store = open_run_store(args.run_dir, readonly=readonly)
    try:
        with reading(store):
            jh = resolve_judge_hash(store)
            if not store.has_ai_pairs(jh):
                raise RlaifError(f"{args.run_dir}: the judge made no comparisons (no AI pairs to review)")
            check_principle(store, jh, args.principle)
            filters = Filters(args.principle, args.status, args.search, args.source, args.category)
            queue = Queue(store, jh, filters, args.order, args.seed, args.low_confidence)
    except BaseException:
        store.close()
        raise
    return store, jh, filters, queue


def viewer_app(args, store, judge_hash, filters, queue=None):
    """The viewer on ``queue`` (the one ``open_queue`` opened: not counted twice) or a queue it opens."""
    from rlaif.viewer.app import ViewerApp
    from rlaif.viewer.queue import annotator_name

    return ViewerApp(store, judge_hash, annotator_name(args.annotator), filters=filters, order=args.order,
                     seed=args.seed, low_confidence=args.low_confidence, queue=queue)


def cmd_view(args) -> int:
    import sys

    from rlaif.errors import RlaifError
    from rlaif.layout import RunLayout
    from rlaif.viewer.journal import replay
    from rlaif.viewer.queue import annotator_name, open_run_store

    annotator = annotator_name(args.annotator)  # a bad --annotator is an error before anything opens
    with open_run_store(args.run_dir) as s:  # first what an earlier session kept and could not store
        replayed = replay(RunLayout.of_store(s.path), s)
    store, jh, filters, queue = open_queue(args)
    try:
        if not queue:
            raise RlaifError(f"no comparisons match the filters ({filters.describe()})")
        if not (sys.stdin.isatty() and sys.stderr.isatty()):  # Textual reads stdin and draws on stderr
            raise RlaifError("`rlaif view` needs an interactive terminal; use `rlaif show RUN_DIR` in pipes and logs")
        if args.rate:
            from rlaif.viewer.rate_app import RateApp
            from rlaif.viewer.rating import Responses, iter_responses

            # every response of the queue, in its order, read as far as the rater goes
            app = RateApp(store, Responses(iter_responses(queue)), annotator)
        else:
            app = viewer_app(args, store, jh, filters, queue)
        if replayed:
            app.notice = (f"saved {replayed} write(s) an earlier viewer session kept while the store was busy "
                          "(it ended before it could save them)")
        try:
            app.run()
        finally:
            app.writes.close()  # a journal with writes still kept stays for the next opening
    finally:
        store.close()
    return 0


def cmd_show(args) -> int:
    from rich.console import Console

    from rlaif.viewer.render import render_panel

    store, jh, filters, queue = open_queue(args, readonly=True)
    try:
        say_pending(store, "listing")  # its human labels and the reviewed/unreviewed filters lack them
        total = store.ai_pair_counts(jh)[0]
        shown = queue[: args.limit] if args.limit and args.limit > 0 else queue
        console = Console()
        console.print(f"{len(queue)} of {total} comparisons match (filters: {filters.describe()}; "
                      f"order: {args.order}); showing {len(shown)}", markup=False)  # a search is text
        for i, c in enumerate(shown, 1):
            console.print(render_panel(c, f"{i}/{len(queue)}", args.low_confidence))
    finally:
        store.close()
    return 0


def say_pending(store, what: str) -> None:
    """One line on stderr when viewer journals hold writes the store does not yet (rlaif/viewer/journal.py): a
    read-only command does not store them (that is a write), so it says that ``what`` lacks them and what will."""
    import sys

    from rlaif.layout import RunLayout
    from rlaif.viewer.journal import pending

    layout = RunLayout.of_store(store.path)
    n = pending(layout, store)
    if n:
        print(f"warning: {n} viewer write(s) journaled in {layout.viewer_journals} are not in the run store yet, so "
              f"not in this {what}: `rlaif view {layout.root}` (or `rlaif run`) stores them; a viewer still running "
              "stores its own", file=sys.stderr)


def cmd_labels_stats(args) -> int:
    from pathlib import Path

    from rich.console import Console

    from rlaif.labels import label_stats, print_stats
    from rlaif.outputs import check_target, write_json
    from rlaif.viewer.queue import open_run_store, reading, resolve_judge_hash

    if args.json_out:
        check_target(Path(args.json_out), "--json")  # a bad --json is exit 2 before the work
    with open_run_store(args.run_dir, readonly=True) as store, reading(store):
        say_pending(store, "count")
        st = label_stats(store, resolve_judge_hash(store))
    print_stats(st, Console())
    if args.json_out:
        write_json(st, args.json_out)
    return 0


def cmd_labels_export(args) -> int:
    from rlaif.feedback import feedback_records
    from rlaif.labels import export_records, write_export
    from rlaif.viewer.queue import open_run_store, reading, resolve_judge_hash

    with open_run_store(args.run_dir, readonly=True) as store, reading(store):
        if args.source != AI:
            say_pending(store, "export")
        jh = resolve_judge_hash(store) if args.source != HUMAN else None
        feedback = feedback_records(store.feedback()) if args.source != AI else []
        n, skipped = write_export(export_records(store, jh, args.source), args.format, args.output, feedback)
    extra = f"; left out: {', '.join(f'{k} {why}' for why, k in skipped.items())}" if skipped else ""
    n_fb = len(feedback) if args.format == "jsonl" else 0  # written after the labels, by jsonl only
    fb = f" and {n_fb} single-response feedback records" if n_fb else ""
    print(f"wrote {n - n_fb} {args.source} labels{fb} to {args.output} ({args.format}{extra})")
    return 0


def cmd_labels_import(args) -> int:
    import itertools
    from dataclasses import replace
    from pathlib import Path

    from rlaif.chat import with_system, with_system_all
    from rlaif.labels import run_system_prompt
    from rlaif.labels_reader import read_labels_file
    from rlaif.safeio import check_regular_file
    from rlaif.viewer.queue import open_run_store
    from rlaif.vocab import IMPORT_PATH_HASH_CHARS, import_name, import_names_start, import_prefix

    check_regular_file(args.file, "labels import file")
    feedback: list = []
    labels = read_labels_file(args.file, human=args.human, feedback=feedback)  # read ahead in a child process
    head = list(itertools.islice(labels, 10_000))  # a small file's own errors come before the run directory's
    with open_run_store(args.run_dir) as store:
        system = run_system_prompt(args.run_dir)  # the run's data.system_prompt, as its file labels have it
        if system:
            labels = (replace(h, prompt=with_system(h.prompt, system)) for h in itertools.chain(head, labels))
            head = []
        # staged while the file is read, then one transaction: a bad record anywhere leaves nothing imported
        # importing the file again with the other --human choice replaces what the earlier import stored, as
        # it does what a run from before import_name stored under the bare file name (either choice), and the
        # same records on the same line that an import of a file of this name from another path stored (the file
        # moved, or was given through another folder: a copy, not a second file's records)
        name, bare = import_name(args.file), Path(args.file).name
        new = import_prefix(name, args.human)
        n = store.import_human_labels(itertools.chain(head, labels),
                                      then_feedback=lambda: with_system_all(feedback, system),
                                      supersede=((import_prefix(name, not args.human), import_prefix(bare, False),
                                                  import_prefix(bare, True)), new),
                                      copies=((import_names_start(bare, False), import_names_start(bare, True)),
                                              IMPORT_PATH_HASH_CHARS))
        total = store.human_label_count()
    fb = f" and {len(feedback)} single-response feedback" if feedback else ""
    print(f"imported {n} labels{fb} from {args.file} into {args.run_dir} as {new}LINE ({total} human labels in "
          "the run; the next `rlaif run`/`mix` uses them)")
    return 0
