"""Benchmark: the openai judge backend against a hostile server (issue #12).

    python bench/judge_hostile_server.py [--calls 16] [--mb 20]

Starts rlaif/testing/fake_openai.py in its own process answering every call with a
body of MB megabytes, then makes CALLS calls at concurrency 8 with the default
``judge.max_response_bytes`` and prints the time and this process's peak RSS
(the server's memory is not counted). Run it with PYTHONPATH pointing at
another checkout to compare (the code before the bound held every body whole).
Then a server that trickles its answer one byte each 0.2 s, against
``timeout_s: 1, max_retries: 0``: prints how long until the call is given up.
"""

from __future__ import annotations

import argparse
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from rlaif.testing.fake_openai import Fault, FakeOpenAI, Reply
big = "A" * int(float(sys.argv[3]) * 1_000_000)
fault = (lambda i, b: Fault.trickle(0.2)) if sys.argv[4] == "trickle" else None
with FakeOpenAI(responder=lambda r: Reply(big if sys.argv[4] == "huge" else "A"), port=int(sys.argv[2]),
                fault_fn=fault):
    print("ready", flush=True)
    time.sleep(3600)
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(kind: str, mb: float, calls: int, **cfg_kw) -> tuple[float, list[str]]:
    from rlaif.config import JudgeConfig
    from rlaif.judges.llm import Call
    from rlaif.judges.openai_backend import OpenAICompleter

    port = _port()
    srv = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT / "tests"), str(port), str(mb), kind],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        cfg = JudgeConfig(backend="openai", model="m", base_url=f"http://127.0.0.1:{port}/v1", constitution="x",
                          **cfg_kw)
        c = OpenAICompleter(cfg)
        t0 = time.perf_counter()
        out = c.run([Call(messages=[{"role": "user", "content": f"q{i}"}], max_tokens=10**8, logprobs=False)
                     for i in range(calls)])
        seconds = time.perf_counter() - t0
        c.close()
        return seconds, sorted({(o.error or "answered")[:60] for o in out})
    finally:
        srv.kill()
        srv.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=16)
    ap.add_argument("--mb", type=float, default=20.0)
    a = ap.parse_args()
    s, outcome = _run("huge", a.mb, a.calls, concurrency=8, max_retries=0, timeout_s=60)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{a.calls} calls x {a.mb:g} MB bodies, concurrency 8: {s:.1f}s, peak RSS {rss:.0f} MB; {outcome}")
    s, outcome = _run("trickle", 0, 1, max_retries=0, timeout_s=1.0)
    print(f"trickling server (1 byte / 0.2 s), timeout_s 1, max_retries 0: given up after {s:.1f}s; {outcome}")


if __name__ == "__main__":
    main()
