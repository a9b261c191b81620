"""The fake OpenAI-compatible server, exercised with the real ``openai`` client (sync and async)."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import socket
import time

import pytest

openai = pytest.importorskip("openai")

from rlaif.testing.fake_openai import (  # noqa: E402
    FakeOpenAI,
    Fault,
    Reply,
    digits,
    echo_text,
    last_user_text,
    messages_text,
    position_biased,
    prefers,
)

MSG = [{"role": "system", "content": "You are a judge."},
       {"role": "user", "content": "Which response is better?\n[A] Cats purr.\n[B] Dogs bark.\nAnswer A or B."}]


@pytest.fixture
def server():
    with FakeOpenAI() as s:
        yield s


def client(server, **kw):
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 5.0)
    return openai.OpenAI(base_url=server.base_url, api_key="test-key", **kw)


def ask(c, **kw):
    kw.setdefault("model", "judge-x")
    kw.setdefault("messages", MSG)
    return c.chat.completions.create(**kw)


# ----------------------------------------------------------------- normal answers

def test_chat_completion_with_logprobs_sync(server):
    with client(server) as c:
        resp = ask(c, logprobs=True, top_logprobs=5, max_tokens=1, temperature=0.0)
    choice = resp.choices[0]
    assert resp.object == "chat.completion" and resp.model == "judge-x"
    assert choice.message.role == "assistant" and choice.message.content == "A"
    assert choice.finish_reason == "stop"
    tok = choice.logprobs.content[0]
    assert tok.token == "A" and tok.bytes == [65] and tok.logprob == pytest.approx(math.log(0.7))
    top = {t.token: t.logprob for t in tok.top_logprobs}
    assert list(top) == ["A", "B", " A", "C", "1"]
    assert top["B"] == pytest.approx(math.log(0.3))
    assert resp.usage.completion_tokens == 1
    assert resp.usage.prompt_tokens == len(MSG[0]["content"] + "\n" + MSG[1]["content"]) // 4
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 1
    # the client passes logprobs / top_logprobs through as-is
    body = server.requests[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 5 and body["max_tokens"] == 1
    assert body["messages"] == MSG
    assert server.stats["requests"] == 1 and server.stats["by_status"] == {200: 1}


def test_top_logprobs_cut_and_absent(server):
    with client(server) as c:
        two = ask(c, logprobs=True, top_logprobs=2)
        none = ask(c)
    assert [t.token for t in two.choices[0].logprobs.content[0].top_logprobs] == ["A", "B"]
    assert none.choices[0].logprobs is None


def test_async_client_and_models(server):
    async def main():
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as c:
            models = await c.models.list()
            resps = await asyncio.gather(*[
                c.chat.completions.create(model="m", messages=MSG, logprobs=True, top_logprobs=3)
                for _ in range(5)])
        return models, resps

    models, resps = asyncio.run(main())
    assert [m.id for m in models.data] == ["fake-judge"]
    assert all(r.choices[0].logprobs.content[0].top_logprobs[0].token == "A" for r in resps)
    assert len({r.id for r in resps}) == 5
    assert server.stats["http_requests"] == 6


def test_responders():
    def keyword(req):  # P(A better) = 0.9 when A's text mentions "purr"
        a_part = last_user_text(req).split("[B]")[0]
        return 0.9 if "purr" in a_part else 0.1

    with FakeOpenAI(responder=prefers(keyword)) as s, client(s) as c:
        r = ask(c, logprobs=True, top_logprobs=2)
        swapped = [MSG[0], {"role": "user", "content": "[A] Dogs bark.\n[B] Cats purr."}]
        r2 = ask(c, messages=swapped, logprobs=True, top_logprobs=2)
        s.responder = position_biased(0.8)
        r3 = ask(c, messages=swapped, logprobs=True, top_logprobs=2)
        s.responder = digits(lambda req: {"3": 0.1, "7": 0.6, "8": 0.3, "1": 0.0})
        r4 = ask(c, logprobs=True, top_logprobs=20)
        s.responder = echo_text(lambda req: "Response A is more accurate because " + str(len(req["messages"])))
        r5 = ask(c, max_tokens=200)
        s.responder = echo_text("x" * 100)
        r6 = ask(c, max_tokens=5)
    lp = lambda r: {t.token: t.logprob for t in r.choices[0].logprobs.content[0].top_logprobs}  # noqa: E731
    assert r.choices[0].message.content == "A" and lp(r)["A"] == pytest.approx(math.log(0.9))
    assert r2.choices[0].message.content == "B" and lp(r2)["B"] == pytest.approx(math.log(0.9))
    assert r3.choices[0].message.content == "A" and lp(r3) == pytest.approx({"A": math.log(0.8), "B": math.log(0.2)})
    assert r4.choices[0].message.content == "7" and list(lp(r4)) == ["7", "8", "3"]
    assert r5.choices[0].message.content == "Response A is more accurate because 2"
    assert r5.choices[0].logprobs is None and r5.usage.completion_tokens >= 5
    assert r6.choices[0].finish_reason == "length" and len(r6.choices[0].message.content) == 20
    assert "Cats purr" in messages_text(s.requests[0])


def test_legacy_completions(server):
    with client(server) as c:
        r = c.completions.create(model="m", prompt="Say A or B:", logprobs=3, max_tokens=1)
    assert r.choices[0].text == "A"
    assert list(r.choices[0].logprobs.top_logprobs[0]) == ["A", "B", " A"]


def test_respond_with_and_empty_choices(server):
    server.script(Fault.respond_with(Reply("Maybe", {"Maybe": -0.1})), Fault.empty_choices())
    with client(server) as c:
        a = ask(c, logprobs=True, top_logprobs=5)
        b = ask(c)
        c3 = ask(c)
    assert a.choices[0].message.content == "Maybe"
    assert b.choices == []
    assert c3.choices[0].message.content == "A"


# ----------------------------------------------------------------- faults

def test_rate_limit_no_retry(server):
    server.script(Fault.rate_limit(retry_after=0.2))
    with client(server) as c, pytest.raises(openai.RateLimitError) as ei:
        ask(c)
    err = ei.value
    assert err.status_code == 429
    assert err.response.headers["retry-after"] == "0.2" and err.response.headers["retry-after-ms"] == "200"
    assert err.body["code"] == "rate_limit_exceeded"


def test_rate_limit_retried_after_retry_after(server):
    server.script(Fault.rate_limit(retry_after=0.2))
    t0 = time.perf_counter()
    with client(server, max_retries=2) as c:
        resp = ask(c)
    waited = time.perf_counter() - t0
    assert resp.choices[0].message.content == "A"
    assert 0.18 <= waited < 2.0  # the client honoured the 0.2 s Retry-After
    assert server.stats["by_status"] == {429: 1, 200: 1}
    assert server.request_headers[1].get("x-stainless-retry-count") == "1"


def test_server_error(server):
    server.script(Fault.server_error(), Fault.server_error(503))
    with client(server) as c:
        with pytest.raises(openai.InternalServerError) as ei:
            ask(c)
        assert ei.value.status_code == 500
        with pytest.raises(openai.InternalServerError) as ei:
            ask(c)
        assert ei.value.status_code == 503


def test_timeout(server):
    server.script(Fault.timeout(5.0))
    t0 = time.perf_counter()
    with client(server, timeout=0.3) as c, pytest.raises(openai.APITimeoutError):
        ask(c)
    assert time.perf_counter() - t0 < 2.0


def test_malformed_body(server):
    server.script(Fault.malformed(), Fault.malformed(b"<html>oops</html>", content_type="text/html"))
    with client(server) as c:
        with pytest.raises(ValueError):  # json.JSONDecodeError escapes the client unwrapped
            ask(c)
        # non-JSON content type: the client returns the raw text instead of a ChatCompletion
        assert ask(c) == "<html>oops</html>"


@pytest.mark.parametrize("reset", [False, True])
def test_drop_connection(server, reset):
    server.script(Fault.drop_connection(reset=reset))
    with client(server) as c:
        with pytest.raises(openai.APIConnectionError):
            ask(c)
        assert ask(c).choices[0].message.content == "A"  # the next request works
    assert server.stats["dropped"] == 1


def test_no_logprobs(server):
    server.script(Fault.no_logprobs())
    with client(server) as c:
        resp = ask(c, logprobs=True, top_logprobs=5)
    assert resp.choices[0].message.content == "A" and resp.choices[0].logprobs is None


def test_fault_fn_every_10th():
    with FakeOpenAI(fault_fn=lambda i, body: Fault.server_error() if i % 10 == 9 else None) as s, client(s) as c:
        failed = []
        for i in range(20):
            try:
                ask(c)
            except openai.InternalServerError:
                failed.append(i)
    assert failed == [9, 19]
    assert s.stats["by_status"] == {200: 18, 500: 2}


def test_responder_error_is_a_500_and_recorded():
    def boom(req):
        raise RuntimeError("responder bug")

    with FakeOpenAI(responder=boom) as s, client(s, max_retries=3) as c:
        with pytest.raises(openai.InternalServerError, match="responder bug"):
            ask(c)
    assert len(s.errors) == 1 and s.stats["requests"] == 1  # x-should-retry: false


# ----------------------------------------------------------------- HTTP level

def test_keep_alive_and_localhost_only(server):
    with client(server) as c:
        for _ in range(5):
            ask(c)
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.stats["connections"] == 1 and server.stats["requests"] == 5


def test_raw_http(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    body = json.dumps({"model": "m", "messages": MSG}).encode()
    conn.request("POST", "/v1/chat/completions", body=iter([body]), encode_chunked=True,
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["choices"][0]["message"]["content"] == "A"
    conn.request("POST", "/v1/chat/completions", body=b"{not json")
    r = conn.getresponse()
    assert r.status == 400 and "error" in json.loads(r.read())
    conn.request("GET", "/v1/nope")
    r = conn.getresponse()
    assert r.status == 404 and r.getheader("content-length")
    r.read()
    conn.close()
    assert server.stats["connections"] == 1 and server.stats["requests"] == 1


def test_stop_closes_connections_and_inflight_requests():
    s = FakeOpenAI().start()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    body = json.dumps({"model": "m", "messages": MSG}).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
    sock.sendall(req)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
    s.script(Fault.timeout(30.0))
    sock2 = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    sock2.sendall(req)
    time.sleep(0.1)
    t0 = time.perf_counter()
    s.stop()
    assert time.perf_counter() - t0 < 2.0
    assert sock.recv(1) == b"" and sock2.recv(1) == b""  # both closed by the server
    sock.close()
    sock2.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=1).close()


# ----------------------------------------------------------------- throughput

def test_throughput_64_concurrent_at_50ms():
    n, concurrency, latency = 200, 64, 0.05

    async def main(base_url):
        sem = asyncio.Semaphore(concurrency)
        async with openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0) as c:
            async def one(i):
                async with sem:
                    r = await c.chat.completions.create(model="m", messages=MSG, logprobs=True, top_logprobs=5)
                    return r.choices[0].message.content

            t0 = time.perf_counter()
            out = await asyncio.gather(*[one(i) for i in range(n)])
            return out, time.perf_counter() - t0

    with FakeOpenAI(latency_s=latency) as s:
        out, elapsed = asyncio.run(main(s.base_url))
        stats = s.stats
    rate = n / elapsed
    print(f"\n{n} requests, concurrency {concurrency}, latency {latency * 1000:.0f} ms: "
          f"{elapsed:.2f} s, {rate:.0f} req/s (ideal {concurrency / latency:.0f}); "
          f"max in flight {stats['max_in_flight']}, connections {stats['connections']}")
    assert out == ["A"] * n
    # the rate is printed, not asserted: it depends on the machine's load (bench/judge_throughput.py measures it)
    assert stats["max_in_flight"] >= 16  # requests overlap


def test_server_throughput_with_raw_keepalive_client():
    """The server alone (minimal asyncio HTTP client, 64 keep-alive connections) gets close to
    concurrency / latency; the openai client's own CPU cost is what limits the test above."""
    workers, per_worker, latency = 64, 10, 0.05
    body = json.dumps({"model": "m", "messages": MSG, "logprobs": True, "top_logprobs": 5}).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body

    async def worker(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(per_worker):
            writer.write(req)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            assert json.loads(await reader.readexactly(length))["choices"][0]["message"]["content"] == "A"
        writer.close()

    async def main(port):
        t0 = time.perf_counter()
        await asyncio.gather(*[worker(port) for _ in range(workers)])
        return time.perf_counter() - t0

    with FakeOpenAI(latency_s=latency) as s:
        elapsed = asyncio.run(main(s.port))
        stats = s.stats
    n = workers * per_worker
    print(f"\nraw client: {n} requests over {workers} keep-alive connections at {latency * 1000:.0f} ms: "
          f"{elapsed:.2f} s, {n / elapsed:.0f} req/s (ideal {workers / latency:.0f})")
    assert stats["requests"] == n and stats["connections"] == workers
    assert n / elapsed > 300
