"""How long `rlaif labels import` holds the run store's write lock: what another process (a viewer giving a
verdict, a judge stage committing a batch) waits for, against SQLite's busy timeout (30 s in rlaif).

    python bench/lock_hold.py                     # 100k and 300k labels
    python bench/lock_hold.py --sizes 1000000     # 1M labels (a 1.3 GB file; about a minute here)

Per size: a TRL JSONL file of N labels (texts as bench/scale.py writes them) imported by `rlaif labels import`
in its own process into an empty run store, while this process tries to take the write lock (``BEGIN
IMMEDIATE``, no busy wait) every 5 ms and measures how long it is refused. Prints the import's wall time, the
longest refusal (the longest write transaction, to the probe's 5 ms) and the refusals' sum. The rlaif that is
measured is the one on PYTHONPATH (compare two checkouts by running this file under each).
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


def measure(n: int, work: Path) -> dict:
    from rlaif.store import Store

    run = work / f"run-{n}"
    run.mkdir()
    Store(run / "store.sqlite").close()
    labels = work / f"labels-{n}.jsonl"
    write_file(labels, n)
    probe = sqlite3.connect(run / "store.sqlite", timeout=0, isolation_level=None)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rlaif.cli", "labels", "import", str(labels), str(run)],
                            stdout=subprocess.DEVNULL, env=os.environ)
    longest = total = 0.0
    refused_since = None
    while proc.poll() is None:
        now = time.perf_counter()
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            if refused_since is not None:
                longest, total = max(longest, now - refused_since), total + now - refused_since
                refused_since = None
        except sqlite3.OperationalError:
            refused_since = refused_since if refused_since is not None else now
        time.sleep(PROBE_S)
    wall = time.perf_counter() - t0
    if refused_since is not None:
        longest, total = max(longest, wall - refused_since), total + wall - refused_since
    probe.close()
    if proc.returncode != 0:
        raise SystemExit(f"labels import exited {proc.returncode}")
    with Store(run / "store.sqlite", readonly=True) as s:
        stored = s.human_label_count()
    return {"labels": n, "stored": stored, "import_s": round(wall, 2), "longest_lock_s": round(longest, 2),
            "locked_s": round(total, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,300000")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for n in (int(s) for s in args.sizes.split(",")):
            r = measure(n, Path(d))
            print(f"{r['labels']:>9,} labels: import {r['import_s']:6.2f} s, longest write lock "
                  f"{r['longest_lock_s']:6.2f} s, locked {r['locked_s']:6.2f} s in all ({r['stored']:,} stored)",
                  flush=True)


if __name__ == "__main__":
    main()
