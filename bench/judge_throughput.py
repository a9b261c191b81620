"""Benchmark: LLM-judge throughput against a local OpenAI-compatible server.

    python bench/judge_throughput.py [--latency 0.05] [--pairs 10000] [--principles 4]

Starts rlaif/testing/fake_openai.py in its own process (50 ms added latency), then
1. judge calls/s at concurrency 1, 8, 64 (rlaif's openai backend, call cache
   in a SQLite store, batches of the default `judge.batch_size`, pipelined as
   in the judge stage), with each of the client's transports (aiohttp, the
   default, and httpx), and in the same run a bare loop of
   `AsyncOpenAI().chat.completions.create` calls at the same concurrency with
   the same transport against the same server (the floor set by the client
   and this machine);
2. a labelling run of PAIRS comparisons x PRINCIPLES principles (one order:
   PAIRS x PRINCIPLES calls) at concurrency 64, with peak RSS;
3. the same run again (all cached: zero calls expected);
4. the run after editing one of the principles (calls expected: 1/PRINCIPLES).

Targets (issue #3): at concurrency 8 >= 90% of concurrency/latency
(144 calls/s of 160), >= 80% of the bare client at every concurrency, peak
RSS < 1 GB for 10,000 pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rlaif.testing.fake_openai", "--port", str(port),
                             "--latency", str(latency)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}/v1"


async def bare_loop(base_url: str, n: int, concurrency: int, transport: str) -> float:
    """calls/s of a plain gather over AsyncOpenAI calls (the client's default httpx transport, or aiohttp)."""
    import openai

    http = openai.DefaultAioHttpClient() if transport == "aiohttp" else openai.DefaultAsyncHttpxClient()
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, http_client=http)
    sem = asyncio.Semaphore(concurrency)
    msgs = [{"role": "user", "content": "Which is better, A or B? " * 20}]

    async def one():
        async with sem:
            await client.chat.completions.create(model="fake-judge", messages=msgs, max_tokens=1, logprobs=True,
                                                 top_logprobs=5, temperature=0.0)

    await asyncio.gather(*(one() for _ in range(min(n, 2 * concurrency))))  # warm connections
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    dt = time.perf_counter() - t0
    await client.close()
    return n / dt


def constitution(n: int, edited: int | None = None):
    from rlaif.constitution import Constitution

    ps = [{"id": f"p{i}", "text": f"Prefer the response that is better on aspect {i}."
           + (" (edited)" if i == edited else ""), "weight": 1.0} for i in range(n)]
    return Constitution.model_validate({"name": "bench", "principles": ps})


def judge_for(base_url: str, concurrency: int, store, transport: str = "aiohttp"):
    from rlaif.config import JudgeConfig
    from rlaif.judges import make_judge

    cfg = JudgeConfig(backend="openai", model="fake-judge", base_url=base_url, constitution="x", orders="random",
                      concurrency=concurrency, timeout_s=30, http_client=transport)
    return make_judge(cfg, store=store)


def label(judge, items, batch: int) -> tuple[float, int]:
    """Label items as the judge stage does: batches of the default size, each committed, pipelined."""
    t0 = time.perf_counter()
    for _ in judge.compare_batches(items[i:i + batch] for i in range(0, len(items), batch)):
        pass
    dt = time.perf_counter() - t0
    judge.close()
    return dt, judge.stats.calls


def main() -> int:
    from rlaif.config import JudgeConfig
    from rlaif.store import Store

    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--pairs", type=int, default=10000)
    ap.add_argument("--principles", type=int, default=4)
    args = ap.parse_args()
    server, url = start_server(args.latency)
    tmp = Path(tempfile.mkdtemp(prefix="rlaif-judge-bench-"))
    rows = []
    try:
        c1 = constitution(1)
        batch = JudgeConfig.model_fields["batch_size"].default
        for conc, n in ((1, 100), (8, 800), (64, 3000)):
            limit = conc / args.latency
            bare = {t: asyncio.run(bare_loop(url, n, conc, t)) for t in ("httpx", "aiohttp")}
            for transport in ("aiohttp", "httpx"):
                with Store(tmp / f"c{conc}-{transport}.sqlite") as store:
                    judge = judge_for(url, conc, store, transport)
                    items = [(f"prompt {conc}-{i}", f"answer a {i}", f"answer b {i}", c1.principles[0])
                             for i in range(n)]
                    dt, calls = label(judge, items, batch)
                rate = calls / dt
                rows.append((f"concurrency {conc:2d}, {transport:7s}", f"{rate:7.1f} calls/s",
                             f"{rate / limit:6.1%} of {limit:.0f}/s limit",
                             f"bare client {bare[transport]:7.1f}/s ({transport})",
                             f"{rate / bare[transport]:6.1%} of bare",
                             f"{rate / bare['httpx']:6.1%} of the default-client bare loop"))

        cN = constitution(args.principles)
        items = [(f"prompt {i}", f"answer a {i}", f"answer b {i}", p) for i in range(args.pairs) for p in cN.principles]
        with Store(tmp / "big.sqlite") as store:
            judge = judge_for(url, 64, store)
            dt, calls = label(judge, items, batch)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rows.append((f"{len(items)} calls (pairs x principles)", f"{calls / dt:8.1f} calls/s", f"{dt:6.1f} s",
                         f"peak RSS {rss:.0f} MB", ""))
            again = judge_for(url, 64, store)
            dt2, calls2 = label(again, items, batch)
            rows.append(("re-run, unchanged", f"{calls2} calls", f"{dt2:6.1f} s", f"{again.stats.cache_hits} cached", ""))
            edited = constitution(args.principles, edited=1)
            items2 = [(p_, a, b, edited.principle(pr.id)) for p_, a, b, pr in items]
            third = judge_for(url, 64, store)
            dt3, calls3 = label(third, items2, batch)
            rows.append((f"re-run, 1 of {args.principles} principles edited", f"{calls3} calls",
                         f"{calls3 / len(items):.1%} of calls", f"{dt3:6.1f} s", ""))
    finally:
        server.terminate()
    print(f"judge throughput (fake server, {args.latency * 1000:.0f} ms latency, {sys.platform}, "
          f"{__import__('os').cpu_count()} cores)")
    for r in rows:
        print("  " + " | ".join(x for x in r if x))
    return 0


if __name__ == "__main__":
    sys.exit(main())
