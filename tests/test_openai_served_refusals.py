"""A served model's HTTP 400s that no retry fixes (rlaif/served.py): a chat template with no system role (Gemma's),
and a prompt over the served model's context length; for the openai judge and a served policy (the fake server)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import make_tiny_project
from test_generate_openai import project, served_args  # noqa: F401 - project: the fixture of a served policy
from test_openai_robustness import cfg, items, within

from rlaif import chat, served
from rlaif.cli import main
from rlaif.config import GenerateConfig, JudgeConfig, ServedPolicy
from rlaif.judges import make_judge
from rlaif.testing.fake_openai import FakeOpenAI, Fault, echo_text, prefers

# What servers answer (vLLM passing on Gemma's template error; vLLM, OpenAI, SGLang and llama.cpp over the context).
GEMMA_400 = "System role not supported"
CONTEXT_400 = {
    "vllm": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4952 in the "
            "messages, 48 in the completion). Please reduce the length of the messages or completion.",
    "vllm-new": "'max_tokens' or 'max_completion_tokens' is too large: 48. This model's maximum context length is "
                "4096 tokens and your request has 4090 input tokens (48 > 4096 - 4090).",
    "openai": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
    "sglang": "The input (5000 tokens) is longer than the model's context length (4096 tokens).",
    "llama.cpp": "the request exceeds the available context size, try increasing it",
}


class _Refusal(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(f"Error code: {status} - {{'error': {{'message': {text!r}}}}}")
        self.status_code = status


SYSTEM_FIRST = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("text", list(CONTEXT_400.values()), ids=list(CONTEXT_400))
def test_context_refusals_are_read_as_over_context(text):
    assert served.over_context(_Refusal(400, text)) and not served.refuses_system(_Refusal(400, text), SYSTEM_FIRST)


@pytest.mark.parametrize("status, text, messages, system, context", [
    (400, GEMMA_400, SYSTEM_FIRST, True, False),
    (400, "Conversation system messages are not allowed", SYSTEM_FIRST, True, False),
    (400, GEMMA_400, SYSTEM_FIRST[1:], False, False),  # nothing to fold: not the cause
    (500, GEMMA_400, SYSTEM_FIRST, False, False),  # not a refusal of the request
    (429, "maximum context length", SYSTEM_FIRST, False, False),
    (400, "Invalid value for temperature", SYSTEM_FIRST, False, False),
], ids=["gemma", "other-wording", "no-system-message", "500", "429", "other-400"])
def test_refusal_reading(status, text, messages, system, context):
    e = _Refusal(status, text)
    assert served.refuses_system(e, messages) is system and served.over_context(e) is context


def test_fold_starts_the_first_user_turn_and_system_keeps_the_messages():
    msgs = [*SYSTEM_FIRST, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "More"}]
    assert chat.served_messages(msgs, "system") == msgs
    assert chat.served_messages(msgs, "fold") == [{"role": "user", "content": "Be kind.\n\nHi"}, *msgs[2:]]
    assert msgs[1]["content"] == "Hi"  # not changed in place
    assert chat.served_messages(msgs[1:], "fold") == msgs[1:]


def test_the_default_keeps_old_hashes_and_fold_changes_them():
    judge = JudgeConfig(backend="openai", constitution="c.yaml")
    assert "system_role" not in judge.call_hash()
    assert judge.model_copy(update={"system_role": "fold"}).call_hash()["system_role"] == "fold"
    gen = GenerateConfig(backend="openai", served=ServedPolicy(model="m", base_url="http://x/v1"))
    assert "system_role" not in gen.hash_view()["served"]
    folded = gen.model_copy(update={"served": ServedPolicy(model="m", base_url="http://x/v1", system_role="fold")})
    assert folded.hash_view()["served"]["system_role"] == "fold"


def _no_system_role(i, body):
    """A served Gemma: any request with a system message is refused, as vLLM refuses it."""
    if body["messages"][0]["role"] == "system":
        return Fault.server_error(400, message=GEMMA_400)
    return None


def test_judge_refused_a_system_message_names_the_option_and_fold_is_scored():
    with FakeOpenAI(responder=prefers(lambda r: 0.9), fault_fn=_no_system_role) as server:
        judge = make_judge(cfg(server))
        vs = within(20, lambda: judge.compare(items()))
        assert all(v.status == "unscored" for v in vs)
        for v in vs:  # the raw reply kept, one line, the fix named
            assert GEMMA_400 in v.raw and "HTTP 400" in v.raw and "judge.system_role: fold" in v.raw, v.raw
            assert "\n" not in v.raw
        assert judge.report()["failed_calls"] == len(server.requests)  # a re-run retries them (after the fix)
        n = len(server.requests)
        judge = make_judge(cfg(server, system_role="fold"))
        vs = within(20, lambda: judge.compare(items()))
        assert all(v.status == "scored" for v in vs), [v.raw for v in vs]
        refused, sent = server.requests[:n], server.requests[n:]
    assert sent and all(r["messages"][0]["role"] == "user" for r in sent)
    # the same calls, the judge's own system text at the start of the user turn
    assert {json.dumps(r["messages"]) for r in sent} == {json.dumps(chat.fold_system(r["messages"])) for r in refused}


def test_judge_prompt_over_the_context_is_unscored_not_a_failed_call():
    with FakeOpenAI(fault_fn=lambda i, body: Fault.server_error(400, message=CONTEXT_400["vllm"])) as server:
        judge = make_judge(cfg(server))
        vs = within(20, lambda: judge.compare(items()))
    assert all(v.status == "unscored" and "maximum context length" in v.raw and "context length" in v.raw
               and "--max-model-len" in v.raw for v in vs), [v.raw for v in vs]
    assert judge.report()["failed_calls"] == 0  # final, like a transformers judge's prompt over judge.max_length


def test_judge_system_role_is_for_the_served_judge_only(tmp_path, capsys):
    proj = make_tiny_project(tmp_path / "proj")
    assert main(["generate", str(proj / "pipeline.yaml"), "--set", "judge.backend=embedding",
                 "--set", "judge.system_role=fold"]) == 2
    err = capsys.readouterr().err.strip()
    assert "judge.system_role" in err and "openai" in err and len(err.splitlines()) == 1
    assert not (proj / "run").exists()


# ---------------------------------------------------------------- a served policy
def _answer(req):
    return f"served answer to {req['messages'][-1]['content'][:20]}"


def _args(server, *extra):
    return served_args(server, "--set", "data.system_prompt=Be kind.", "--set", "generate.batch_size=2", *extra)


def _candidates(proj):
    db = sqlite3.connect(proj / "run" / "store.sqlite")
    rows = db.execute("SELECT prompt_id FROM candidates").fetchall()
    prompts = dict(db.execute("SELECT id, text FROM prompts WHERE split='train'").fetchall())
    info = json.loads(db.execute("SELECT info FROM stages WHERE name='generate'").fetchone()[0] or "{}")
    db.close()
    return {r[0] for r in rows}, prompts, info


@pytest.mark.slow
def test_served_policy_refusing_a_system_message_is_one_line_naming_the_option(project, capsys):
    with FakeOpenAI(responder=echo_text(_answer), fault_fn=_no_system_role) as server:
        assert main(["generate", str(project / "pipeline.yaml"), *_args(server)]) == 2
        (err,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert "generate.served.system_role: fold" in err and GEMMA_400 in err, err
        assert len(server.requests) == 2  # stopped after the batch in flight, not one refusal per prompt
        assert main(["generate", str(project / "pipeline.yaml"),
                     *_args(server, "--set", "generate.served.system_role=fold")]) == 0
        sent = server.requests[2:]
    done, prompts, _ = _candidates(project)
    assert done == set(prompts) and len(sent) == len(prompts)
    assert all(len(r["messages"]) == 1 and r["messages"][0]["role"] == "user"
               and r["messages"][0]["content"].startswith("Be kind.\n\n") for r in sent)


@pytest.mark.slow
def test_served_prompt_over_the_context_is_a_final_recorded_outcome(project, capsys):
    first = []

    def over_context(i, body):  # the prompt asked first is "too long" for the served model
        text = body["messages"][-1]["content"]
        first[:] = first or [text]
        return Fault.server_error(400, message=CONTEXT_400["vllm"]) if text == first[0] else None

    pipeline = str(project / "pipeline.yaml")
    with FakeOpenAI(responder=echo_text(_answer), fault_fn=over_context) as server:
        assert main(["generate", pipeline, *_args(server)]) == 0
        out = capsys.readouterr().err
        done, prompts, info = _candidates(project)
        assert len(done) == len(prompts) - 1  # every other prompt sampled and committed
        over = info["over_context"]
        assert over["prompts"] == 1 and over["ids"] == sorted(set(prompts) - done)
        assert "maximum context length" in over["error"] and "--max-model-len" in over["fix"]
        assert "1 prompt(s) got no candidates" in " ".join(out.split())
        n = len(server.requests)
        assert main(["generate", pipeline, *_args(server)]) == 0  # recorded: not asked again on a re-run
        assert len(server.requests) == n
        assert main(["generate", pipeline, *_args(server), "--force"]) == 0  # after a fix: --force asks it only
        assert len(server.requests) == n + 1
        _, _, info = _candidates(project)
        assert info["over_context"]["prompts"] == 1


def test_critique_writer_on_a_served_policy_takes_its_system_role(tmp_path):
    from rlaif.config import load_config
    from rlaif.critique import served_policy
    from rlaif.judges.llm import Call

    proj = make_tiny_project(tmp_path / "proj")
    with FakeOpenAI(responder=echo_text(_answer), fault_fn=_no_system_role) as server:
        for role, fixed in (("system", False), ("fold", True)):
            run_cfg = load_config(proj / "pipeline.yaml", [
                "generate.backend=openai", f"generate.served.base_url={server.base_url}",
                "generate.served.model=fake-policy", "generate.served.max_retries=0", "judge.backend=embedding",
                f"generate.served.system_role={role}"])
            writer = served_policy(run_cfg)
            try:
                (out,) = within(20, lambda w=writer: w.run([Call(SYSTEM_FIRST, 16, False)]))
            finally:
                writer.close()
            if fixed:
                assert out.error is None and server.requests[-1]["messages"] == chat.fold_system(SYSTEM_FIRST)
            else:
                assert "generate.served.system_role: fold" in out.error, out.error


@pytest.mark.slow
def test_every_served_prompt_over_the_context_is_exit_2(project, capsys):
    with FakeOpenAI(fault_fn=lambda i, body: Fault.server_error(400, message=CONTEXT_400["sglang"])) as server:
        assert main(["generate", str(project / "pipeline.yaml"), *_args(server)]) == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "every prompt is over the served model's context length" in err and "context length" in err


@pytest.mark.slow
def test_critique_call_over_the_context_is_final_not_a_failed_call(tmp_path, scripted_backend, capsys):
    """The served policy's first answer to one prompt is over its context: that prompt is not revised, the stage
    is done with no failed call, and the next run skips it (a failed call would re-run it every time)."""
    proj = make_tiny_project(tmp_path / "proj")
    first = []

    def over_context(i, body):
        text = body["messages"][-1]["content"]
        first[:] = first or [text]
        return Fault.server_error(400, message=CONTEXT_400["openai"]) if text == first[0] else None

    with FakeOpenAI(responder=echo_text("An answer."), fault_fn=over_context) as server:
        args = ["--set", "critique.enabled=true", "--set", "generate.backend=openai",
                "--set", "generate.served.model=fake-policy", "--set", f"generate.served.base_url={server.base_url}",
                "--set", "generate.served.max_retries=0"]
        assert main(["critique", str(proj / "pipeline.yaml"), *args]) == 0
        info = json.loads(sqlite3.connect(proj / "run" / "store.sqlite").execute(
            "SELECT info FROM stages WHERE name='critique'").fetchone()[0])
        assert info["over_context_calls"] == 1 and info["failed_calls"] == 0, info
        assert "over the writer's context" in " ".join(capsys.readouterr().err.split())
        n = len(server.requests)
        assert main(["critique", str(proj / "pipeline.yaml"), *args]) == 0
        assert len(server.requests) == n  # skipped: inputs unchanged, nothing failed
