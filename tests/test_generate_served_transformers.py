"""Integration: generate.backend openai against `transformers serve` hosting the tiny Qwen2 chat model."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_qwen2(tmp_path_factory):
    pytest.importorskip("fastapi", reason="transformers[serving] not installed (pip install -e '.[dev]')")
    pytest.importorskip("uvicorn", reason="transformers[serving] not installed")
    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists() and shutil.which("transformers") is None:
        pytest.skip("the `transformers` CLI is not installed")
    from tiny_chat_models import chat_model_dir

    d = chat_model_dir(tmp_path_factory, "qwen2")
    port = _free_port()
    proc = subprocess.Popen([str(exe if exe.exists() else "transformers"), "serve", str(d), "--host", "127.0.0.1",
                             "--port", str(port), "--device", "cpu"], env=dict(os.environ, HF_HUB_OFFLINE="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.skip(f"transformers serve exited with {proc.returncode} before it was ready")
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.skip("transformers serve did not become ready within 120 s")
    yield url + "/v1", str(d)
    proc.terminate()
    proc.wait(timeout=30)


def test_served_generation_from_transformers_serve(served_qwen2, tmp_path):
    from rlaif import chat
    from rlaif.config import GenerateConfig, ServedPolicy
    from rlaif.generate import generate_candidates
    from rlaif.records import Prompt
    from rlaif.store import Store

    base_url, model = served_qwen2
    prompts = [Prompt("p0", "How do I boil an egg?"),
               Prompt("p1", chat.encode([{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Hi"},
                                         {"role": "assistant", "content": "Hello."},
                                         {"role": "user", "content": "Rain poem?"}]))]
    gcfg = GenerateConfig(backend="openai", num_candidates=2, max_new_tokens=6, batch_size=1,
                          served=ServedPolicy(model=model, base_url=base_url, timeout_s=60, max_retries=1,
                                              concurrency=2))
    with Store(tmp_path / "store.sqlite") as s:
        s.put_prompts(prompts)
        made = generate_candidates(s, Path(model), "h", "gen", gcfg, 0, "cpu")["new_candidates"]
        cands = s.candidates("gen")
    assert made == 4 and len(cands) == 4
    assert sorted((c.prompt_id, c.index) for c in cands) == [("p0", 0), ("p0", 1), ("p1", 0), ("p1", 1)]
    assert all(c.policy_hash.startswith("served:") and isinstance(c.text, str) for c in cands)
