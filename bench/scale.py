"""Scale: how each path that touches the run store grows from 1k to 1M comparisons.

    python bench/scale.py                       # 1k, 10k, 100k, 1M comparisons (about 12 min here, quiet)
    python bench/scale.py --sizes 1000,10000    # a quick look
    python bench/scale.py --out /tmp/scale      # where the synthetic runs go (default: a temp folder)

A synthetic run per size: prompts x 4 candidates x 4 principles, ranked with
``pairs: all`` (6 comparisons a prompt), 1% of the comparisons labelled in the
viewer. Each path runs in its own process, timed, with its peak RSS read from
``wait4``; none of them is the judge's server (bench/judge_throughput.py
measures that), so the judge is a scripted backend that scores by a hash:

- ``generate``: the candidates committed in batches of 256, as `generate` does;
- ``judge``: the judge stage's core (rlaif/judges/run.py) with the call cache,
  the judgements and the AI pairs written to the store;
- ``mix``: `mix` (AI pairs + human labels -> the Arrow ``pairs/`` dataset);
- ``rm data``: train-rm's data loading (the Arrow dataset opened, 100 batches of 32 read);
- ``view``: `rlaif view` to its first screen (Textual, headless; wall time) and then
  20 moves to the next item (the viewer's CPU time per move, key to repainted screen;
  the pilot's wall time, which adds its own >= 60 ms of idle detection, is in scale.json);
  then `rlaif view --status unreviewed` and its `End` key, to the last item of the
  filtered queue (``view end``: CPU time, key to repainted screen; pilot wall time in scale.json);
- ``show``, ``labels stats``, ``labels export`` (``--source all``, JSONL) and
  ``labels import`` of a TRL file with as many labels as comparisons.

It prints one table and writes ``bench/scale.png``: time and peak RSS against the
number of comparisons, log-log.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CANDIDATES, PRINCIPLES, PAIRS_PER_PROMPT = 4, 4, 6
WORDS = ("the a model answer question safe kind helpful clear short long reason because people often "
         "should could would never always water plant energy light travel city river music history science "
         "cook recipe garden sleep health money time friend letter write read learn explain idea").split()
STEPS = ("generate", "judge", "mix", "rm data", "view first screen", "view move", "view end", "show", "labels stats",
         "labels export", "labels import")
TARGETS = {"view first screen": "<= 2 s", "view move": "<= 0.1 s", "labels stats": "<= 10 s",
           "labels export": "<= 30 s, < 500 MB", "labels import": "<= 30 s, < 500 MB", "judge": "< 1 GB",
           "mix": "< 1 GB"}


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def constitution():
    from rlaif.constitution import Constitution

    return Constitution.model_validate({"name": "scale", "version": "1", "principles": [
        {"id": f"p{i}", "text": f"Prefer the response that is better in respect {i}.", "weight": 1.0 + i}
        for i in range(PRINCIPLES)]})


def scripted_judge():
    from rlaif.hashing import content_hash
    from rlaif.judges.base import JudgeBackend, Verdict

    class HashJudge(JudgeBackend):  # a judge whose answer costs nothing: the store is what is measured
        backend, model, template_hash = "scale", "hash", "scale-v1"

        def score(self, prompts, responses, principle):
            return [Verdict(int(content_hash([principle.id, r], 4), 16) % 9 + 1.0) for r in responses]

    return HashJudge()


# ---------------------------------------------------------------- the steps (each in its own process)
def step_generate(run: Path, n: int) -> dict:
    from rlaif.records import Candidate, Prompt
    from rlaif.store import Store

    rng = random.Random(0)
    n_prompts = max(1, n // PAIRS_PER_PROMPT)
    with Store(run / "store.sqlite") as store:
        store.put_prompts(Prompt(f"p{i:07d}", text(rng, 12), "benign", "train") for i in range(n_prompts))
        batch: list = []
        for i in range(n_prompts):
            for k in range(CANDIDATES):
                batch.append(Candidate(f"p{i:07d}-{k}", f"p{i:07d}", k, text(rng, 40), "policy"))
            if len(batch) >= 256:
                store.add_candidates(batch, "gen")
                batch = []
        if batch:
            store.add_candidates(batch, "gen")
    return {}


def step_judge(run: Path, n: int) -> dict:
    from rlaif.judges.run import judge_candidates
    from rlaif.store import Store

    with Store(run / "store.sqlite") as store:
        judge = scripted_judge().with_cache(store)
        info = judge_candidates(store, judge, constitution(), "gen", "jh", "all", 1.0, 256)
        store.set_stage("judge", "jh", "done", info={"judge_hash": "jh"})
        # 1% of the comparisons get a viewer label (half agree), so stats and the mix have human labels
        from rlaif.records import HumanLabel

        labelled = (d for i, d in enumerate(store.iter_ai_pairs("jh")) if i % 100 == 0)
        store.add_human_labels([HumanLabel(d["prompt"], d["chosen"] if i % 2 else d["rejected"],
                                           d["rejected"] if i % 2 else d["chosen"], source="viewer:bench")
                                for i, d in enumerate(labelled)])
    return {"ai_pairs": info["ai_pairs"]}


def step_mix(run: Path, n: int) -> dict:
    from rlaif.config import MixConfig
    from rlaif.layout import RunLayout
    from rlaif.mixing import mix, save_pairs
    from rlaif.store import Store

    with Store(run / "store.sqlite") as store:
        # as the mix stage reads them (rlaif/stages.py): streamed, the details' gap only, kept as row ids
        splits, stats = mix(store.iter_ai_pairs("jh", gap_only=True), store.human_labels(), MixConfig(), 0,
                            resolve=store.ai_pairs_by_rows)
        save_pairs(splits, RunLayout(run))
    return {"train_pairs": stats["train_pairs"]}


def step_rm_data(run: Path, n: int) -> dict:
    from datasets import load_from_disk

    from rlaif.layout import RunLayout

    train = load_from_disk(str(RunLayout(run).pairs))["train"]
    for b in range(min(100, len(train) // 32)):
        train[b * 32:(b + 1) * 32]
    return {}


def step_view(run: Path, n: int) -> dict:
    import asyncio

    from rlaif.viewer.commands import open_queue, viewer_app

    t0 = time.perf_counter()
    args = argparse.Namespace(run_dir=str(run), order="review", seed=0, principle=None, status=None,
                              search=None, source=None, category=None, low_confidence=0.6, annotator="bench")
    store, judge_hash, filters, queue = open_queue(args)  # as `rlaif view` opens it
    app = viewer_app(args, store, judge_hash, filters, queue)
    out: dict = {}

    async def go():
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            out["first"] = time.perf_counter() - t0
            # A move's cost is the viewer's CPU time from the key to the repainted screen (one thread: what a
            # user waits for on a free core). The pilot's wall time is kept too, but it includes its own idle
            # detection: each press and pause sleeps in 20 ms steps until the process goes quiet (>= 60 ms).
            t1, c1 = time.perf_counter(), time.process_time()
            for _ in range(20):
                await pilot.press("j")
                await pilot.pause()
            out["move"] = (time.process_time() - c1) / 20
            out["move_pilot_wall"] = (time.perf_counter() - t1) / 20
            await pilot.press("q")

    asyncio.run(go())
    store.close()
    out.update(_view_end(args))
    return out


def _view_end(args: argparse.Namespace) -> dict:
    """`rlaif view --status unreviewed`, then End: the key's CPU time to the repainted last item."""
    import asyncio

    from rlaif.viewer.commands import open_queue, viewer_app

    args = argparse.Namespace(**{**vars(args), "status": "unreviewed"})
    store, judge_hash, filters, queue = open_queue(args)
    app = viewer_app(args, store, judge_hash, filters, queue)
    out: dict = {}

    async def go():
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            t1, c1 = time.perf_counter(), time.process_time()
            await pilot.press("end")
            await pilot.pause()
            out["end"], out["end_pilot_wall"] = time.process_time() - c1, time.perf_counter() - t1
            assert app.cursor == len(queue) - 1, "End did not reach the last item"
            await pilot.press("q")

    asyncio.run(go())
    store.close()
    return out


def cli(*argv: str) -> dict:
    from rlaif.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(list(argv))
    if rc != 0:
        raise SystemExit(f"rlaif {' '.join(argv)} exited {rc}")
    return {}


def write_import_file(run: Path, n: int) -> Path:
    rng = random.Random(1)
    path = run.parent / f"labels-{n}.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"{i} " + text(rng, 12), "chosen": text(rng, 40),
                                "rejected": text(rng, 40)}) + "\n")
    return path


def run_step(step: str, run: Path, n: int) -> dict:
    if step == "generate":
        return step_generate(run, n)
    if step == "judge":
        return step_judge(run, n)
    if step == "mix":
        return step_mix(run, n)
    if step == "rm data":
        return step_rm_data(run, n)
    if step == "view":
        return step_view(run, n)
    if step == "show":
        return cli("show", str(run), "--limit", "20")
    if step == "labels stats":
        return cli("labels", "stats", str(run))
    if step == "labels export":
        return cli("labels", "export", str(run), "--source", "all", "-o", str(run.parent / f"export-{n}.jsonl"))
    if step == "labels import":
        return cli("labels", "import", str(run.parent / f"labels-{n}.jsonl"), str(run))
    raise SystemExit(f"unknown step {step!r}")


def forget_imported(run: Path, n: int) -> None:
    """Take the bench's imported labels out of the run again, so that paths re-run with ``--steps`` (the viewer
    and ``labels stats`` read the human labels) see the run as the judge left it, not with n more labels."""
    from rlaif.store import Store
    from rlaif.vocab import import_source

    with Store(run / "store.sqlite") as store:
        store.delete_human_labels_from(import_source(f"labels-{n}.jsonl", 1).rsplit(":", 1)[0] + ":")


def measure(step: str, run: Path, n: int) -> tuple[float, float, dict]:
    """(seconds, peak RSS MB, the step's own figures), the step in a child process."""
    out = run.parent / f".{step.replace(' ', '_')}-{n}.json"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", step, "--run", str(run), "--n", str(n),
                             "--result", str(out)], env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])})
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"step {step} at {n} failed")
    return secs, usage.ru_maxrss / 1024, json.loads(out.read_text())


def plot(rows: list[dict], sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 5))
    for step in STEPS:
        pts = [(r["n"], r["seconds"], r["rss_mb"]) for r in rows if r["step"] == step]
        if not pts:
            continue
        ns, ts, ms = zip(*pts)
        ax_t.loglog(ns, ts, marker="o", label=step)
        ax_m.loglog(ns, ms, marker="o", label=step)
    ax_t.set(xlabel="comparisons", ylabel="seconds", title="time")
    ax_m.set(xlabel="comparisons", ylabel="peak RSS (MB)", title="memory")
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--out", help="folder for the synthetic runs (default: a temporary folder, removed)")
    ap.add_argument("--plot", default=str(Path(__file__).with_name("scale.png")))
    ap.add_argument("--steps", help="only these paths, comma-separated (e.g. view,show), on the runs already in "
                                    "--out (their generate/judge/mix figures are kept from scale.json there)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        t0 = time.perf_counter()
        res = run_step(a.child, Path(a.run), a.n)
        res.setdefault("seconds", time.perf_counter() - t0)
        Path(a.result).write_text(json.dumps(res))
        return 0

    from rich.console import Console
    from rich.table import Table

    sizes = [int(s) for s in a.sizes.split(",")]
    tmp = tempfile.TemporaryDirectory(prefix="rlaif-scale-") if not a.out else None
    base = Path(a.out or tmp.name)
    rows: list[dict] = []
    console = Console()
    only = a.steps.split(",") if a.steps else None
    if only:  # keep the figures of the steps not re-run
        if not a.out or not (base / "scale.json").is_file():
            raise SystemExit("--steps needs --out with the runs and scale.json of an earlier run")
        redo = {"view first screen", "view move", "view end"} if "view" in only else set()
        rows = [r for r in json.loads((base / "scale.json").read_text())
                if r["step"] not in set(only) | redo and r["step"] != "store size"]
    for n in sizes:
        run = base / f"run-{n}"
        run.mkdir(parents=True, exist_ok=True)
        if not only:
            write_import_file(run, n)
        for step in ("generate", "judge", "mix", "rm data", "view", "show", "labels stats", "labels export",
                     "labels import"):
            if only and step not in only:
                continue
            secs, rss, res = measure(step, run, n)
            if step == "view":
                rows.append({"step": "view first screen", "n": n, "seconds": res["first"], "rss_mb": rss})
                rows.append({"step": "view move", "n": n, "seconds": res["move"], "rss_mb": rss,
                             "pilot_wall_seconds": res["move_pilot_wall"]})
                rows.append({"step": "view end", "n": n, "seconds": res["end"], "rss_mb": rss,
                             "pilot_wall_seconds": res["end_pilot_wall"]})
            else:
                rows.append({"step": step, "n": n, "seconds": secs, "rss_mb": rss})
            console.log(f"{n:>9,} {step:<14} {rows[-1]['seconds']:8.2f} s {rss:8.0f} MB")
        store = run / "store.sqlite"
        size = store.stat().st_size + sum(p.stat().st_size for p in run.glob("store.sqlite-*")) - _free_bytes(store)
        text_bytes = _text_bytes(store)
        rows.append({"step": "store size", "n": n, "bytes": size, "text_bytes": text_bytes})
        forget_imported(run, n)

    t = Table(title="rlaif at scale (seconds / peak RSS MB; wall time of a fresh process, Python start included)")
    t.add_column("path")
    for n in sizes:
        t.add_column(f"{n:,}", justify="right")
    t.add_column("target at 1M")
    for step in STEPS:
        cells = []
        for n in sizes:
            r = next((r for r in rows if r["step"] == step and r["n"] == n), None)
            cells.append("—" if r is None else f"{r['seconds']:.2f} s / {r['rss_mb']:.0f}")
        t.add_row(step, *cells, TARGETS.get(step, ""))
    cells = []
    for n in sizes:
        r = next(r for r in rows if r["step"] == "store size" and r["n"] == n)
        cells.append(f"{(r['bytes'] - r['text_bytes']) / n:.0f} B + text")
    t.add_row("store per comparison", *cells, "< 2 KB + text")
    console.print(t)
    plot([r for r in rows if "seconds" in r], sizes, Path(a.plot))
    console.print(f"plot: {a.plot}")
    (base / "scale.json").write_text(json.dumps(rows, indent=1))
    if tmp:
        tmp.cleanup()
    return 0


def _free_bytes(store: Path) -> int:
    """Pages SQLite keeps for reuse after deletes (not data)."""
    import sqlite3

    db = sqlite3.connect(store)
    try:
        return db.execute("PRAGMA freelist_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()


def _text_bytes(store: Path) -> int:
    import sqlite3

    db = sqlite3.connect(store)
    q = ("SELECT (SELECT COALESCE(SUM(LENGTH(text)), 0) FROM prompts) + (SELECT COALESCE(SUM(LENGTH(text)), 0) "
         "FROM candidates) + (SELECT COALESCE(SUM(LENGTH(prompt) + LENGTH(chosen) + LENGTH(rejected)), 0) "
         "FROM human_labels)")
    try:
        return db.execute(q).fetchone()[0]
    finally:
        db.close()


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
