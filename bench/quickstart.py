"""Benchmark: the quickstart pipeline end to end (wall time, peak RSS, figures).

    python bench/quickstart.py [--workdir DIR] [--keep]

Runs `rlaif run pipelines/quickstart.yaml` in a fresh run directory as a
child process, measures its wall time and peak resident memory, then runs
it again (every stage should be skipped) and prints the report's figures.
Targets (issue #2): <= 300 s wall and <= 4 GB peak RSS on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(workdir: Path) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "rlaif", "run", str(ROOT / "pipelines" / "quickstart.yaml"), "--workdir", str(workdir)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"rlaif run failed ({proc.returncode}):\n{err[-3000:]}")
    # ru_maxrss of children is the largest child's peak (KiB on Linux).
    rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 / 1024
    return wall, rss_gb


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    wd = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="rlaif-bench-")) / "quickstart"
    if wd.exists():
        shutil.rmtree(wd)
    wall, rss = run(wd)
    rerun_wall, _ = run(wd)
    report = json.loads((wd / "report.json").read_text())
    rows = [
        ("cores", os.cpu_count()),
        ("wall time, first run (s)", f"{wall:.1f}  (target <= 300)"),
        ("peak RSS (GB)", f"{rss:.2f}  (target <= 4)"),
        ("wall time, unchanged re-run (s)", f"{rerun_wall:.1f}"),
    ]
    rows += [(f"timings_s.{k}", f"{v:.1f}") for k, v in report["timings_s"].items() if v is not None]
    rows += [(f"counts.{k}", v) for k, v in report["counts"].items()]
    rows += [(f"judge.{k}", v) for k, v in report["judge"].items() if k in ("calls", "unscored", "human_agreement")]
    rows += [(f"reward_model.{k}", v) for k, v in report["reward_model"].items()]
    rows += [(f"policy.{k}", v) for k, v in report["policy"].items()]
    width = max(len(k) for k, _ in rows)
    print(f"quickstart benchmark ({wd})")
    for k, v in rows:
        v = f"{v:.3f}" if isinstance(v, float) else v
        print(f"  {k:<{width}}  {v}")
    if not args.keep and not args.workdir:
        shutil.rmtree(wd.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
