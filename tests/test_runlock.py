"""One writer per run directory: a second pipeline process gets one line (exit 2) naming the run
directory and the holder's pid; read-only commands still work; the lock dies with its holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_project

from rlaif import runlock
from rlaif.errors import RlaifError

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
ENV.pop(runlock.HELD_ENV, None)

HOLD = """
import sys, time
from rlaif.config import load_config
from rlaif.pipeline import open_run
run = open_run(load_config(sys.argv[1], []), sys.argv[2])
print("ready", flush=True)
time.sleep(120)
"""


def rlaif(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaif", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def holder(tmp_path):
    """A real process that opened the run (as every pipeline command does) and keeps it open."""
    proj = make_tiny_project(tmp_path / "proj")
    cfg = proj / "pipeline.yaml"
    data = yaml.safe_load(cfg.read_text())  # a backend a fresh process knows (no call is made)
    data["judge"].update(backend="openai", base_url="http://127.0.0.1:9/v1")
    cfg.write_text(yaml.safe_dump(data))
    wd = proj / "run"
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(cfg), str(wd)], cwd=proj, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.strip() == "ready", p.stderr.read()
        yield proj, wd, p
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


@pytest.mark.parametrize("command", [["run"], ["sft"], ["generate"]], ids=["run", "sft-stage", "generate-stage"])
def test_second_writer_is_refused_with_the_holders_pid(holder, command):
    proj, wd, p = holder
    t0 = time.monotonic()
    r = rlaif(*command, "pipeline.yaml", "--workdir", str(wd), cwd=proj)
    assert r.returncode == 2, r.stderr + r.stdout
    out = (r.stderr + r.stdout).strip()
    assert len(out.splitlines()) == 1, out
    assert str(wd) in out and f"pid {p.pid}" in out and "Traceback" not in out
    assert time.monotonic() - t0 < 60
    assert not (wd / "sft").exists() and not (wd / "sft.partial").exists()


def test_read_only_commands_do_not_take_the_lock(holder):
    proj, wd, _ = holder
    r = rlaif("show", str(wd), cwd=proj)
    assert "in use" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_lock_dies_with_a_killed_holder(holder):
    _, wd, p = holder
    with pytest.raises(RlaifError, match=f"pid {p.pid}"):
        runlock.acquire(wd)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    lock = runlock.acquire(wd)  # no hand repair: the kernel dropped the flock
    lock.release()


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    a = runlock.acquire(tmp_path)
    b = runlock.acquire(tmp_path)
    b.release()
    code = "import sys; from rlaif import runlock; runlock.acquire(sys.argv[1])"
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=ENV, capture_output=True, text=True)
    assert r.returncode != 0 and f"pid {os.getpid()}" in r.stderr
    a.release()
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
