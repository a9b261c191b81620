"""LLM judges over many batches: the next batch is in flight while one is read back,
nothing paid for is lost or asked twice, and the result equals batch-by-batch judging."""

from __future__ import annotations

import concurrent.futures

import pytest
from conftest import CONSTITUTION

from rlaif.config import JudgeConfig
from rlaif.constitution import Constitution
from rlaif.judges import make_judge
from rlaif.judges.base import JudgeBackend
from rlaif.judges.core import Item, score_items
from rlaif.judges.llm import Completer, Completion, LLMJudge
from rlaif.store import Store
from rlaif.testing.fake_openai import FakeOpenAI, digits, last_user_text, prefers

PRINCIPLES = Constitution.model_validate(CONSTITUTION)
P0 = PRINCIPLES.principles[0]


class LoggingCompleter(Completer):
    """Answers 'A' with P=0.8 at once; logs when each batch is submitted."""

    backend, model = "logging", "m"

    def __init__(self, log: list):
        self.log, self.n = log, 0

    def run(self, calls):
        return [Completion(text="A", top_logprobs={"A": -0.223, "B": -1.609}) for _ in calls]

    def submit(self, calls, results=None):
        self.log.append(f"submit {self.n}")
        self.n += 1
        f = concurrent.futures.Future()
        f.set_result(self.run(calls))
        return f

    def usage(self):
        return {}


def test_next_batch_is_submitted_before_a_batch_is_read_back():
    log: list[str] = []
    judge = LLMJudge(LoggingCompleter(log), orders="random")
    batches = [[(f"q{b}-{i}", "x", "y", P0) for i in range(3)] for b in range(3)]
    out = []
    for k, vs in enumerate(judge.compare_batches(batches)):
        log.append(f"read {k}")
        out.append(vs)
    assert log == ["submit 0", "submit 1", "read 0", "submit 2", "read 1", "read 2"]
    plain = LLMJudge(LoggingCompleter([]), orders="random")
    assert [[v.p_first for v in vs] for vs in out] == [[v.p_first for v in plain.compare(b)] for b in batches]


def test_batches_with_few_new_calls_are_started_further_ahead():
    log: list[str] = []
    completer = LoggingCompleter(log)
    completer.concurrency = 3  # keep about 2 x 3 calls waiting
    judge = LLMJudge(completer, orders="random")
    batches = [[(f"q{b}", "x", "y", P0)] for b in range(10)]  # one call per batch
    for k, _ in enumerate(judge.compare_batches(batches)):
        log.append(f"read {k}")
    assert log.index("read 0") == 6 and log[:6] == [f"submit {i}" for i in range(6)]
    assert [x for x in log if x.startswith("read")] == [f"read {k}" for k in range(10)]


def cfg(server, **kw) -> JudgeConfig:
    base = dict(backend="openai", model="fake-judge", base_url=server.base_url, constitution="x.yaml",
                max_retries=1, timeout_s=5.0, concurrency=4, orders="random")
    base.update(kw)
    return JudgeConfig(**base)


def test_same_call_in_two_batches_in_flight_is_made_once():
    with FakeOpenAI(latency_s=0.2, responder=prefers(lambda req: 0.7)) as server:
        judge = make_judge(cfg(server))
        same = ("q", "first answer", "second answer", P0)
        out = list(judge.compare_batches([[same], [same, ("q2", "a", "b", P0)]]))
    assert len(server.requests) == 2  # `same` once, q2 once
    assert out[0][0].p_first == out[1][0].p_first  # the second batch reads the first batch's answer
    assert abs(out[0][0].p_first - 0.5) == pytest.approx(0.2)
    assert judge.stats.calls == 2


def test_budget_stop_in_pipelined_batches_keeps_every_paid_call(tmp_path):
    from rlaif.judges.llm import BudgetExceeded

    batches = [[(f"q{b}-{i}", "x", "y", P0) for i in range(3)] for b in range(5)]
    with FakeOpenAI(latency_s=0.02, responder=prefers(lambda req: 0.7)) as server, \
            Store(tmp_path / "s.sqlite") as store:
        judge = make_judge(cfg(server, max_calls=7, concurrency=2), store=store)
        with pytest.raises(BudgetExceeded):
            for _ in judge.compare_batches(batches):
                pass
        paid = len(server.requests)
        assert paid == 7
        resumed = make_judge(cfg(server), store=store)
        out = list(resumed.compare_batches(batches))
        assert len(server.requests) - paid == 15 - 7  # nothing paid for is asked again
        assert resumed.stats.cache_hits == 7
    assert all(v.status == "scored" for vs in out for v in vs)


def test_pointwise_score_items_pipelined_equals_unpipelined(tmp_path):
    def digit_of(req):
        d = str(len(last_user_text(req)) % 8 + 1)  # 1..8, differs between responses
        return {d: 0.8, "9": 0.2}

    items = [(f"prompt {i}", f"response {'x' * i}") for i in range(9)]
    with FakeOpenAI(responder=digits(digit_of)) as server:
        judge = make_judge(cfg(server, method="pointwise"))
        piped = [Item(p, None, r) for p, r in items]
        score_items(judge, PRINCIPLES, piped, batch_size=4)
        calls = len(server.requests)

        class NoPipeline(JudgeBackend):  # the same judge without its score_batches: one batch at a time
            def __init__(self, inner):
                self.inner = inner
                self.backend, self.model, self.template_hash = inner.backend, inner.model, inner.template_hash

            def score_many(self, requests):
                return self.inner.score_many(requests)

        plain = [Item(p, None, r) for p, r in items]
        score_items(NoPipeline(make_judge(cfg(server, method="pointwise"))), PRINCIPLES, plain, batch_size=4)
    assert calls == len(items) * sum(p.applies(None) for p in PRINCIPLES.principles)
    assert [{k: v.score for k, v in it.verdicts.items()} for it in piped] == \
        [{k: v.score for k, v in it.verdicts.items()} for it in plain]
    assert all(v.status == "scored" for it in piped for v in it.verdicts.values())


def test_cot_same_item_in_two_batches_in_flight(tmp_path):
    from rlaif.testing.fake_openai import Reply, _lp

    def responder(req):
        if req.get("max_tokens", 1) > 1:  # the rationale step
            return Reply("Response A is kinder.")
        return Reply("A", {"A": _lp(0.8), "B": _lp(0.2)})

    with FakeOpenAI(latency_s=0.1, responder=responder) as server, Store(tmp_path / "s.sqlite") as store:
        judge = make_judge(cfg(server, cot=True), store=store)
        same = ("q", "first answer", "second answer", P0)
        out = list(judge.compare_batches([[same], [same]]))
        assert len(server.requests) == 2  # one rationale (then cached), one verdict (in flight, shared)
    assert [vs[0].status for vs in out] == ["scored", "scored"]
    assert out[0][0].p_first == out[1][0].p_first and out[1][0].rationale == "Response A is kinder."


class InterruptedCompleter(LoggingCompleter):
    """Batch 0 finishes; from batch 1 on, the first call of a batch finishes and then Ctrl-C arrives."""

    def submit(self, calls, results=None):
        self.n += 1
        f = concurrent.futures.Future()
        if self.n == 1:
            f.set_result(self.run(calls))
        else:
            results[0] = self.run(calls[:1])[0]
            f.set_exception(KeyboardInterrupt())
        return f


def test_ctrl_c_keeps_the_calls_that_finished_in_batches_in_flight(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        judge = LLMJudge(InterruptedCompleter([]), orders="random", store=store)
        batches = [[(f"q{b}-{i}", "x", "y", P0) for i in range(3)] for b in range(4)]
        read = []
        with pytest.raises(KeyboardInterrupt):
            for vs in judge.compare_batches(batches):
                read.append(vs)
        assert len(read) == 1
        n = store.db.execute("SELECT COUNT(*) FROM judge_cache").fetchone()[0]
    assert n == 3 + 1 + 1  # batch 0, and the first call of each of the two batches in flight


class FailingCompleter(LoggingCompleter):
    """The first call of each batch finishes, then the wait is interrupted by ``error``."""

    def __init__(self, error: BaseException):
        super().__init__([])
        self.error = error

    def submit(self, calls, results=None):
        results[0] = self.run(calls[:1])[0]
        f = concurrent.futures.Future()
        f.set_exception(self.error)
        return f


def _cache_rows(store) -> int:
    return store.db.execute("SELECT COUNT(*) FROM judge_cache").fetchone()[0]


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("the client broke")], ids=["ctrl-c", "error"])
@pytest.mark.parametrize("path", ["run_calls", "compare_batches"])
def test_an_interrupted_wait_commits_the_calls_that_finished(tmp_path, error, path):
    from rlaif.judges.llm import Call

    with Store(tmp_path / "s.sqlite") as store:
        judge = LLMJudge(FailingCompleter(error), orders="random", store=store)
        with pytest.raises(type(error)):
            if path == "run_calls":
                judge.run_calls([(Call([{"role": "user", "content": f"q{i}"}]), P0) for i in range(3)])
            else:
                list(judge.compare_batches([[(f"q{i}", "x", "y", P0) for i in range(3)]]))
        assert _cache_rows(store) == 1  # the call that finished before the interruption


def test_an_interrupted_cache_write_is_redone_by_the_next_commit(tmp_path):
    from rlaif.judges.cache import CallCache

    class FlakyStore:  # the first write is interrupted (Ctrl-C inside the transaction)
        def __init__(self, store):
            self.store, self.writes = store, 0

        def cache_get_many(self, keys):
            return self.store.cache_get_many(keys)

        def cache_put_many(self, rows):
            self.writes += 1
            if self.writes == 1:
                raise KeyboardInterrupt
            self.store.cache_put_many(rows)

    with Store(tmp_path / "s.sqlite") as store:
        gate = concurrent.futures.Future()
        cache = CallCache(lambda calls, results: (results.update(enumerate(calls)), gate)[1], FlakyStore(store),
                          dump=lambda r: {"r": r}, load=lambda d: d["r"], lost=lambda k: None)
        job = cache.start(["a", "b"], ["ka", "kb"])
        with pytest.raises(KeyboardInterrupt):
            cache.commit_finished()
        cache.commit_finished()
        assert _cache_rows(store) == 2
        gate.set_result(["a", "b"])
        assert cache.finish(job) == ["a", "b"]


def test_budget_reached_in_a_cot_rationale_step_keeps_the_batches_in_flight(tmp_path):
    from rlaif.judges.llm import BudgetExceeded
    from rlaif.testing.fake_openai import Reply, _lp

    def responder(req):
        if req.get("max_tokens", 1) > 1:
            return Reply("Response A is kinder.")
        return Reply("A", {"A": _lp(0.8), "B": _lp(0.2)})

    batches = [[(f"q{b}-{i}", "x", "y", P0) for i in range(2)] for b in range(3)]
    with FakeOpenAI(latency_s=0.05, responder=responder) as server, Store(tmp_path / "s.sqlite") as store:
        # batch 0: 2 rationales + 2 verdicts (in flight); batch 1: the 2nd rationale is over budget
        judge = make_judge(cfg(server, cot=True, max_calls=5), store=store)
        with pytest.raises(BudgetExceeded):
            for _ in judge.compare_batches(batches):
                pass
        paid = len(server.requests)
        assert paid == 5
        resumed = make_judge(cfg(server, cot=True), store=store)
        list(resumed.compare_batches(batches))
        assert resumed.stats.cache_hits == 5  # batch 0's verdicts in flight were kept too
        assert len(server.requests) - paid == 12 - 5
