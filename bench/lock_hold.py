"""How long a writer holds the run store's write lock: what another process (a viewer giving a verdict, a
judge stage committing a batch) waits for, against SQLite's busy timeout (30 s in rlaif).

    python bench/lock_hold.py                               # labels import of 100k and 300k labels
    python bench/lock_hold.py --sizes 1000000               # 1M labels
    python bench/lock_hold.py --paths judge --sizes 100000  # the pointwise judge stage, first run and re-run

The writer runs in its own process while this one tries to take the write lock (``BEGIN IMMEDIATE``, no
busy wait) every 5 ms and measures how long it is refused. Prints the writer's wall time, the longest
refusal (its longest write transaction, to the probe's 5 ms) and the refusals' sum.
- ``import``: a TRL JSONL file of N labels (texts as bench/scale.py writes them) imported by
  `rlaif labels import` into an empty run store;
- ``judge``: bench/scale.py's synthetic run of N comparisons judged by its scripted judge (the stage's core,
  rlaif/judges/run.py), then judged again (the calls cached; the pairs replaced).
The rlaif measured is the one on PYTHONPATH (compare two checkouts by running this file under each).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE_S = 0.005


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(("the", "answer", "plants", "water", "light", "model", "lock", "safe", "code"))
                    for _ in range(words))


def write_file(path: Path, n: int) -> None:
    rng = random.Random(1)
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"{i} " + text(rng, 12), "chosen": text(rng, 40),
                                "rejected": text(rng, 40)}) + "\n")


def probe(cmd: list[str], store: Path) -> tuple[float, float, float]:
    """Run ``cmd`` while trying to take ``store``'s write lock every PROBE_S: (wall s, longest refusal s,
    refusals' sum s)."""
    db = sqlite3.connect(store, timeout=0, isolation_level=None)
    t0 = time.perf_counter()
    # cwd: not this checkout (`python -m` puts the working directory before PYTHONPATH on sys.path)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=os.environ, cwd=store.parent)
    longest = total = 0.0
    refused_since = None
    while proc.poll() is None:
        now = time.perf_counter()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
            if refused_since is not None:
                longest, total = max(longest, now - refused_since), total + now - refused_since
                refused_since = None
        except sqlite3.OperationalError:
            refused_since = refused_since if refused_since is not None else now
        time.sleep(PROBE_S)
    wall = time.perf_counter() - t0
    if refused_since is not None:
        longest, total = max(longest, wall - refused_since), total + wall - refused_since
    db.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return wall, longest, total


def report(what: str, wall: float, longest: float, total: float) -> None:
    print(f"{what:<42} {wall:7.2f} s, longest write lock {longest:6.2f} s, locked {total:6.2f} s in all", flush=True)


def measure_import(n: int, work: Path) -> None:
    from rlaif.store import Store

    run = work / f"run-import-{n}"
    run.mkdir()
    Store(run / "store.sqlite").close()
    labels = work / f"labels-{n}.jsonl"
    write_file(labels, n)
    report(f"labels import, {n:,} labels", *probe([sys.executable, "-m", "rlaif.cli", "labels", "import",
                                                   str(labels), str(run)], run / "store.sqlite"))


def measure_judge(n: int, work: Path) -> None:
    """The pointwise judge stage's core on n comparisons (bench/scale.py's run and scripted judge), twice:
    a first run, then a re-run that replaces the pairs (its calls all cached)."""
    run = work / f"run-judge-{n}"
    run.mkdir()
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import scale; "
            "getattr(scale, sys.argv[2])(Path(sys.argv[3]), int(sys.argv[4]))")
    bench = str(Path(__file__).parent)
    subprocess.run([sys.executable, "-c", code, bench, "step_generate", str(run), str(n)], check=True, cwd=run)
    for what in ("first run", "re-run"):
        report(f"judge, {n:,} comparisons, {what}", *probe([sys.executable, "-c", code, bench, "step_judge",
                                                            str(run), str(n)], run / "store.sqlite"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,300000")
    ap.add_argument("--paths", default="import", help="import, judge or both (comma-separated)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for n in (int(s) for s in args.sizes.split(",")):
            for path in args.paths.split(","):
                {"import": measure_import, "judge": measure_judge}[path](n, Path(d))


if __name__ == "__main__":
    main()
