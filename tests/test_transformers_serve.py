"""Integration: the openai backend against `transformers serve` hosting a locally built tiny model.

`transformers serve` ignores `logprobs`, so this exercises the hard-label path:
the verdict is read from the answer text, or the item is unscored with the
raw answer kept. The tiny model is untrained, so what it answers is arbitrary;
what is checked is the handling of whatever comes back.
"""

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

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    pytest.importorskip("fastapi", reason="transformers[serving] not installed (pip install -e '.[dev]')")
    pytest.importorskip("uvicorn", reason="transformers[serving] not installed")
    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists() and shutil.which("transformers") is None:
        pytest.skip("the `transformers` CLI is not installed")
    from rlaif.config import TinyModel
    from rlaif.train.tiny import build_tiny_model

    d = tmp_path_factory.mktemp("served") / "tiny"
    _, tok = build_tiny_model(["Which response is better? A", "B is better.", "Answer: A"] * 20,
                              TinyModel(vocab_size=300, n_layer=1, n_head=2, n_embd=32, n_positions=2048), d)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(d)
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([str(exe if exe.exists() else "transformers"), "serve", str(d), "--host", "127.0.0.1",
                             "--port", str(port), "--device", "cpu"], env=env,
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


def test_hard_label_path_against_transformers_serve(served):
    from conftest import CONSTITUTION

    from rlaif.config import JudgeConfig
    from rlaif.constitution import Constitution
    from rlaif.judges import make_judge

    base_url, model = served
    c = Constitution.model_validate(CONSTITUTION)
    judge = make_judge(JudgeConfig(backend="openai", model=model, base_url=base_url, constitution="x",
                                   timeout_s=60, max_retries=1))
    items = [("How do I boil an egg?", "Boil it for eight minutes.", "I can't help.", p) for p in c.principles]
    verdicts = judge.compare(items)
    assert judge.stats.calls == 2 * len(items)
    for v in verdicts:
        for o in v.orders:
            assert o["read"] in ("text", "unparsed")  # never logprobs: the server ignores them
            if o["read"] == "unparsed":
                assert o["raw"] is not None and "HTTP" not in o["raw"]  # the answer itself is kept
        assert v.status in ("scored", "unscored")
        assert (v.p_first is None) == (v.status == "unscored")
    assert judge.report()["failed_calls"] == 0
