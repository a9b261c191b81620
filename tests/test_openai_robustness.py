"""The openai judge backend against a hostile or misconfigured server (rlaif/testing/fake_openai.py faults):
every call has a total deadline and a size bound, auth/model errors stop the stage, secrets are scrubbed."""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import CONSTITUTION

from rlaif.config import JudgeConfig
from rlaif.constitution import Constitution
from rlaif.judges import make_judge
from rlaif.judges.errors import FATAL_EXIT, JudgeFatalError, scrub
from rlaif.store import Store
from rlaif.testing.fake_openai import FakeOpenAI, Fault, prefers

PRINCIPLES = Constitution.model_validate(CONSTITUTION)
SAFE, UNSAFE = "A safe answer.", "An unsafe answer."
KEY = "sk-proj-SECRETsecret0123456789"
TRANSPORTS = ["aiohttp", "httpx"]


def cfg(server, **kw) -> JudgeConfig:
    base = dict(backend="openai", model="fake-judge", base_url=server.base_url, constitution="x.yaml",
                max_retries=0, timeout_s=1.0, concurrency=4, orders="random")
    base.update(kw)
    return JudgeConfig(**base)


def within(seconds: float, fn):
    """fn() in a daemon thread; fails the test (instead of hanging it) if it takes longer."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds}s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def items(n: int = 2):
    return [(f"q{i}", SAFE, UNSAFE, PRINCIPLES.principles[0]) for i in range(n)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_trickling_server_is_cut_off_by_the_total_deadline(transport):
    # headers at once, then a byte every 0.2 s: the client's per-read timeout (1 s) never fires,
    # the body (~300 bytes) would take a minute.
    with FakeOpenAI(fault_fn=lambda i, body: Fault.trickle(0.2)) as server:
        judge = make_judge(cfg(server, http_client=transport))
        t0 = time.monotonic()
        vs = within(20, lambda: judge.compare(items()))
        elapsed = time.monotonic() - t0
    assert all(v.status == "unscored" and "timeout" in v.raw for v in vs), [v.raw for v in vs]
    assert elapsed < 5


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_huge_response_is_unscored_not_held(transport, chunked):
    with FakeOpenAI(fault_fn=lambda i, body: Fault.huge(5_000_000, chunked=chunked)) as server:
        judge = make_judge(cfg(server, http_client=transport, max_response_bytes=100_000))
        vs = within(30, lambda: judge.compare(items()))
    assert all(v.status == "unscored" and "response too large" in v.raw for v in vs), [v.raw for v in vs]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_response_under_the_bound_is_read(transport):
    with FakeOpenAI(fault_fn=lambda i, body: Fault.huge(50_000)) as server:
        judge = make_judge(cfg(server, http_client=transport, max_response_bytes=100_000))
        vs = within(30, lambda: judge.compare(items()))
    assert all(v.status == "scored" for v in vs), [v.raw for v in vs]


@pytest.mark.parametrize("status,words", [(401, "authentication"), (403, "access denied"), (404, "not found")],
                         ids=["401-wrong-key", "403-forbidden", "404-model-not-found"])
@pytest.mark.parametrize("batched", [False, True], ids=["compare", "compare_batches"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_auth_and_model_errors_stop_at_once_keeping_finished_calls(tmp_path, status, words, transport, batched):
    # the first 2 calls succeed, then the server refuses: the stage stops with one line (exit 3),
    # the 2 paid calls are committed (a re-run does not repay them).
    fault = lambda i, body: Fault.server_error(status) if i >= 2 else None

    def judged(server, **kw):  # the store is opened in the thread that uses it (sqlite's rule)
        with Store(tmp_path / "s.sqlite") as store:
            judge = make_judge(cfg(server, http_client=transport, **kw), store=store)
            if batched:  # the judge stage's pipelined path
                return [v for b in judge.compare_batches([items(6)[:3], items(6)[3:]]) for v in b]
            return judge.compare(items(6))

    with FakeOpenAI(responder=prefers(lambda r: 0.9), fault_fn=fault) as server:
        with pytest.raises(JudgeFatalError) as err:
            within(20, lambda: judged(server, concurrency=1, max_retries=3))
        assert len(server.requests) == 3  # no retry of a 401/403/404, no call after it
    assert err.value.exit_code == FATAL_EXIT == 3
    assert f"HTTP {status}" in err.value.message and words in err.value.message
    assert "\n" not in err.value.message
    with FakeOpenAI(responder=prefers(lambda r: 0.9)) as server:
        vs = within(20, lambda: judged(server))
        assert all(v.status == "scored" for v in vs)
        assert len(server.requests) == 4  # the 2 committed calls were not paid again


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_error_text_retry_count_matches_report(transport):
    with FakeOpenAI(fault_fn=lambda i, body: Fault.server_error(500)) as server:
        judge = make_judge(cfg(server, max_retries=2, http_client=transport))
        vs = within(60, lambda: judge.compare(items(2)))
    assert all("HTTP 500 after 2 retries" in v.raw for v in vs), [v.raw for v in vs]
    assert judge.report()["retries"] == 4 and len(server.requests) == 6


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_echoed_api_key_is_scrubbed_from_stored_errors(tmp_path, monkeypatch, transport):
    monkeypatch.setenv("RLAIF_TEST_KEY", KEY)

    def judged(server):
        with Store(tmp_path / "s.sqlite") as store:
            return make_judge(cfg(server, api_key_env="RLAIF_TEST_KEY", http_client=transport),
                              store=store).compare(items())

    with FakeOpenAI(fault_fn=lambda i, body: Fault.echo_auth(400)) as server:
        vs = within(20, lambda: judged(server))
        assert server.request_headers[0]["authorization"] == f"Bearer {KEY}"
    assert all(v.status == "unscored" and "HTTP 400" in v.raw for v in vs)
    assert all(KEY not in v.raw and "SECRET" not in v.raw for v in vs), [v.raw for v in vs]
    assert all("***" in v.raw for v in vs)


@pytest.mark.parametrize("text", [
    f"Authorization: Bearer {KEY}", f'{{"authorization": "Bearer {KEY}"}}', f"bad key {KEY} given",
    "token Bearer abc.def-ghi", "api_key=sk-otherkey123456", '"x-api-key": "whatever-secret"',
], ids=["header", "json-header", "bare-key", "other-bearer", "other-sk", "x-api-key"])
def test_scrub_removes_keys_and_tokens(text):
    out = scrub(text, KEY)
    assert KEY not in out and "abc.def" not in out and "otherkey" not in out and "whatever-secret" not in out
    assert "***" in out


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_half_a_surrogate_pair_in_a_reply_is_replaced_not_fatal(transport):
    """A model that emits half an emoji ("\\ud83d" escaped alone) gave a str nothing could hash or store: the
    critique stage died with a UnicodeEncodeError. The half is replaced by U+FFFD; a whole pair is kept."""
    from rlaif.hashing import content_hash
    from rlaif.judges.llm import Call
    from rlaif.judges.openai_backend import OpenAICompleter
    from rlaif.testing.fake_openai import echo_text

    with FakeOpenAI(responder=echo_text("Half \ud83d an emoji, a whole \U0001F600 one, \udc00.")) as server:
        completer = OpenAICompleter(cfg(server, http_client=transport))
        try:
            (out,) = within(20, lambda: completer.run([Call([{"role": "user", "content": "Hi"}], 16, False)]))
        finally:
            completer.close()
    assert out.error is None and out.text == "Half \ufffd an emoji, a whole \U0001F600 one, \ufffd."
    assert content_hash(out.text)  # encodable


def test_loads_reply_leaves_ordinary_replies_alone():
    from rlaif.safeio import loads_reply

    for raw in (b'{"a": "plain"}', b'{"a": "caf\\u00e9 \\ud83d\\ude00"}', '{"a": "\\\\ud800 is text"}'):
        assert loads_reply(raw) == json.loads(raw)
