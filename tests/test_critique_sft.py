"""The critique stage before sft: the stage order, this run's sft training on the revisions (re-run when they
change, skipped when not), the writers' sampling settings (sent, and in the call-cache key), and llm-swarm
critique/revision requests sent as they are."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import SHARED, interrupt_on_call, make_tiny_project

from rlaif import stages
from rlaif.cli import main
from rlaif.config import load_config
from rlaif.testing.fake_openai import FakeOpenAI, Reply


def writer(req):
    """A scripted LLM writer whose revisions say which sampling they were asked for."""
    last = req["messages"][-1]["content"]
    if "rewritten response only" in last:
        return Reply(f"A revised answer (t={req.get('temperature')}, seed={'seed' in req}).")
    return Reply("The response is vague about safety.")


def llm(server, *extra):
    return ["--set", "critique.enabled=true", "--set", "critique.reviser=judge", "--set", "judge.backend=openai",
            "--set", f"judge.base_url={server.base_url}", "--set", "judge.model=fake-writer", *extra]


def _info(project, stage):
    row = sqlite3.connect(project / "run" / "store.sqlite").execute(
        "SELECT info FROM stages WHERE name=?", (stage,)).fetchone()
    return json.loads(row[0])


def test_critique_runs_before_sft_and_sft_needs_it_only_when_it_takes_the_revisions(tmp_path, scripted_backend):
    assert stages.NAMES.index("critique") < stages.NAMES.index("sft") < stages.NAMES.index("generate")
    cfg = str(make_tiny_project(tmp_path / "p") / "pipeline.yaml")
    on = ["critique.enabled=true"]
    sft = stages.get("sft")
    assert stages.get("critique").needs(load_config(cfg, on)) == ()
    assert sft.needs(load_config(cfg, on)) == ("critique",)
    assert sft.needs(load_config(cfg)) == ()  # the stage is off
    assert sft.needs(load_config(cfg, [*on, "critique.in_sft=false"])) == ()


@pytest.mark.slow
def test_sft_trains_on_the_revisions_reruns_when_they_change_and_skips_when_not(tmp_path, scripted_backend, capsys):
    project = make_tiny_project(tmp_path / "proj")
    cfg = str(project / "pipeline.yaml")
    base_rows = len((project / "sft.jsonl").read_text().splitlines())
    with FakeOpenAI(responder=writer) as server:
        args = llm(server, "--set", "critique.max_prompts=4")
        assert main(["sft", cfg, *args]) == 2  # sft needs the critique stage's output first
        assert "critique" in capsys.readouterr().err
        assert main(["critique", cfg, *args]) == 0
        revised = _info(project, "critique")["revised"]
        assert main(["sft", cfg, *args]) == 0
        info = _info(project, "sft")
        assert 0 < info["revision_examples"] == revised and info["examples"] == base_rows + revised
        # The writers sample: temperature, top_p and a per-call seed reach the server.
        sent = server.requests[-1]
        assert (sent["temperature"], sent["top_p"], isinstance(sent["seed"], int)) == (0.7, 0.95, True)
        n = len(server.requests)

        capsys.readouterr()
        assert main(["critique", cfg, *args]) == 0 and main(["sft", cfg, *args]) == 0  # unchanged: both skip
        out = capsys.readouterr().err
        assert "skip critique: inputs unchanged" in out and "skip sft: inputs unchanged" in out
        assert len(server.requests) == n and _info(project, "sft") == info

        reseeded = [*args, "--set", "critique.seed=7"]  # the stage's own seed: other samples, new calls
        assert main(["critique", cfg, *reseeded]) == 0
        assert len(server.requests) > n and server.requests[-1]["seed"] != sent["seed"]
        n = len(server.requests)

        greedy = [*args, "--set", "critique.temperature=0"]  # other settings: new calls, new revisions, new sft
        assert main(["critique", cfg, *greedy]) == 0
        assert len(server.requests) == n + 2 * _info(project, "critique")["revised"] > n
        assert server.requests[-1]["temperature"] == 0.0 and "seed" not in server.requests[-1]
        rows = [json.loads(line) for line in (project / "run" / "critique" / "sft.jsonl").read_text().splitlines()]
        assert {r["completion"] for r in rows} == {"A revised answer (t=0.0, seed=False)."}
        assert all(r["sampling"] == "greedy" for r in rows)
        capsys.readouterr()
        assert main(["sft", cfg, *greedy]) == 0
        assert "skip sft" not in capsys.readouterr().err

        capsys.readouterr()
        assert main(["sft", cfg, *greedy, "--set", "critique.in_sft=false"]) == 0  # without the revisions
        assert "skip sft" not in capsys.readouterr().err
        assert _info(project, "sft")["revision_examples"] == 0 and _info(project, "sft")["examples"] == base_rows


@pytest.mark.slow
def test_llm_swarm_critique_and_revision_requests_are_sent_as_they_are(tmp_path, scripted_backend):
    src = SHARED / "constitutions" / "llm_swarm_constitution_anthropic.json"
    if not src.exists():
        pytest.skip("shared data not present")
    entries = json.loads(src.read_text())["constitutions"]
    critics = {e["critic"].strip() for e in entries}
    revisions = {e["revision"] for e in entries}
    project = make_tiny_project(tmp_path / "proj")
    assert main(["constitution", "import", str(src), "--format", "llm-swarm", "-o",
                 str(project / "constitution.yaml")]) == 0

    def swarm_writer(req):
        last = req["messages"][-1]["content"]
        if last in critics:
            return Reply("It could be kinder.")
        assert last.split("\n\n")[0] in revisions, last
        return Reply("A kinder answer.")

    with FakeOpenAI(responder=swarm_writer) as server:
        assert main(["critique", str(project / "pipeline.yaml"),
                     *llm(server, "--set", "critique.max_prompts=5", "--set", "critique.passes=2")]) == 0
    asked = [r["messages"][-1]["content"] for r in server.requests]
    crit = [a for a in asked if a in critics]
    assert crit and len(crit) == len(asked) // 2  # every critique request is one of the file's, verbatim
    pairs = [json.loads(line) for line in (project / "run" / "critique" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(r["chosen"] == "A kinder answer." and len(r["principles"]) == 2 for r in pairs)
    assert all(r["examples"] is None for r in pairs)

    # The file's few-shot dialogues (critique.examples): drawn per prompt and pass, before the prompt in every
    # critique and revision call; other calls than before (in the cache key), the same stage otherwise.
    dialogues = json.loads(src.read_text())["system_chat"]
    with FakeOpenAI(responder=swarm_writer) as server:
        assert main(["critique", str(project / "pipeline.yaml"),
                     *llm(server, "--set", "critique.max_prompts=5", "--set", "critique.passes=2",
                          "--set", f"critique.examples={src}", "--set", "critique.examples_per_call=2")]) == 0
    assert len(server.requests) == len(asked)  # none served from the calls without examples
    prompts = {json.loads(line)["text"] for line in (project / "prompts.jsonl").read_text().splitlines()}
    drawn = set()
    for r in server.requests:
        msgs, n = r["messages"], len(dialogues[0])
        first, second = msgs[:n], msgs[n:2 * n]
        assert first in dialogues and second in dialogues and first != second, msgs[:2]
        assert msgs[2 * n]["role"] == "user" and msgs[2 * n]["content"] in prompts
        drawn.add(json.dumps(first))
    assert len(drawn) > 1  # not always the same dialogues
    pairs = [json.loads(line) for line in (project / "run" / "critique" / "pairs.jsonl").read_text().splitlines()]
    assert all(r["examples"]["per_call"] == 2 and r["examples"]["hash"] for r in pairs)


def _swarm_file(tmp_path, **data):
    path = tmp_path / "swarm.json"
    path.write_text(json.dumps({"constitutions": [{"critic": "Is it kind?", "revision": "Make it kind."}], **data}))
    return path


EXAMPLES_REFUSED = {  # case: (file content, what the one line says)
    "no-system-chat": ({}, "non-empty 'system_chat' list"),
    "dialogue-ends-with-user": ({"system_chat": [[{"role": "user", "content": "Hi"}]]}, "ending with the assistant"),
    "not-messages": ({"system_chat": [["hello"]]}, "system_chat[0]: message 0"),
    # These passed and put an assistant turn first or two user turns in a row into every critique call.
    "dialogue-starts-with-assistant": ({"system_chat": [[{"role": "assistant", "content": "Hi"}]]}, "alternating"),
    "two-user-turns": ({"system_chat": [[{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hm?"},
                                         {"role": "assistant", "content": "Hello"}]]}, "alternating"),
}


@pytest.mark.parametrize("case", sorted(EXAMPLES_REFUSED), ids=str)
def test_bad_examples_file_is_exit_2_one_line_nothing_written(case, tmp_path, scripted_backend, capsys):
    data, says = EXAMPLES_REFUSED[case]
    project = make_tiny_project(tmp_path / "proj")
    args = ["--set", "critique.enabled=true", "--set", "critique.reviser=judge", "--set", "judge.backend=openai",
            "--set", "judge.base_url=http://127.0.0.1:9/v1", "--set", f"critique.examples={_swarm_file(tmp_path, **data)}"]
    assert main(["critique", str(project / "pipeline.yaml"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "swarm.json" in err and says in err, err
    assert not (project / "run").exists()


@pytest.mark.slow
def test_transformers_writer_samples_seeded_or_greedy(qwen2_dir):
    """A transformers writer samples with the calls' settings, reproducibly per seed; greedy without them."""
    from rlaif.config import JudgeConfig
    from rlaif.judges.hf_backend import TransformersCompleter
    from rlaif.judges.llm import Call

    w = TransformersCompleter(JudgeConfig(backend="transformers", model=str(qwen2_dir), constitution="c.yaml"))
    msgs = [[{"role": "user", "content": f"Say something about topic {i}."}] for i in range(3)]

    def texts(sampling):
        return [c.text for c in w.run([Call(m, 12, False, sampling=sampling) for m in msgs])]

    assert texts(None) == texts(None)
    hot = texts((1.5, 1.0, 1))
    assert hot == texts((1.5, 1.0, 1))  # the same seed: the same text
    assert hot != texts((1.5, 1.0, 2)) and hot != texts(None)  # random weights, temperature 1.5: 12 tokens differ


@pytest.mark.slow
def test_a_run_stopped_in_critique_resumes_then_every_stage_follows(tmp_path, scripted_backend, monkeypatch):
    """`rlaif run`: a Ctrl-C in the critique stage keeps its committed calls; the re-run finishes it paying only
    the rest, then sft trains on its revisions, the mix takes its pairs and the report shows both; a third run
    skips every stage."""
    import rlaif.critique as critique
    from rlaif.pipeline import run_pipeline

    project = make_tiny_project(tmp_path / "proj")
    names = stages.NAMES
    with FakeOpenAI(responder=writer) as server:
        sets = [a for a in llm(server, "--set", "critique.batch_size=2") if a != "--set"]
        cfg = load_config(project / "pipeline.yaml", sets)
        # the first answers, then the first critiques: stop here
        real = interrupt_on_call(monkeypatch, critique.Asker, "ask", 2, after=True)
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(cfg, names)
        assert 0 < len(server.requests) and not (project / "run" / "sft").exists()  # critique runs first
        monkeypatch.setattr(critique.Asker, "ask", real)
        run = run_pipeline(cfg, names)
        assert run.ran == list(names)
        revised = _info(project, "critique")["revised"]
        writes = [r for r in server.requests if "critique" in r["messages"][-1]["content"]
                  or "rewritten" in r["messages"][-1]["content"]]  # the judge stage asks the same server
        assert len(writes) == 2 * revised  # one critique and one revision each, none paid twice
        n = len(server.requests)
        assert _info(project, "sft")["revision_examples"] == revised > 0
        # The mix leaves out the revisions on held-out prompts (it holds out per prompt) and trains the rest.
        mixed = _info(project, "mix")
        assert mixed["revision_pairs"] + mixed["revisions_dropped_held_out"] == revised and mixed["revision_pairs"] > 0
        report = json.loads((project / "run" / "report.json").read_text())
        assert report["critique"]["revised"] == report["critique"]["sft_revision_examples"] == revised
        assert report["critique"]["mix_revision_pairs"] == mixed["revision_pairs"] and report["timings_s"]["critique"] > 0
        assert "## critique" in (project / "run" / "report.md").read_text()
        again = run_pipeline(cfg, names)
        assert again.ran == [] and again.skipped == list(names) and len(server.requests) == n


@pytest.mark.slow
def test_conversation_prompts_written_in_trls_conversational_form_and_read_back(tmp_path, scripted_backend):
    """With a system prompt the stage's files hold TRL's conversational records; sft and the mix read them back
    as the run's own stored prompts (not as one user message holding the JSON)."""
    from rlaif.critique import revision_pairs, revision_sft_rows
    from rlaif.layout import RunLayout
    from rlaif.store import Store

    project = make_tiny_project(tmp_path / "proj")
    with FakeOpenAI(responder=writer) as server:
        assert main(["critique", str(project / "pipeline.yaml"), *llm(server, "--set", "critique.max_prompts=3",
                                                                         "--set", "data.system_prompt=Be brief.")]) == 0
    assert server.requests[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    layout = RunLayout(project / "run")
    rows = [json.loads(line) for line in (layout.critique / "pairs.jsonl").read_text().splitlines()]
    assert rows and all(r["prompt"][0] == {"role": "system", "content": "Be brief."} for r in rows)
    assert all(r["chosen"][0]["role"] == "assistant" and r["rejected"][0]["role"] == "assistant" for r in rows)
    store = Store(layout.store, readonly=True)
    stored = {p.text for p in store.prompts("train")}
    store.close()
    assert {r["prompt"] for r in revision_sft_rows(layout)} <= stored
    assert {r["prompt"] for r in revision_pairs(layout)} <= stored and len(revision_pairs(layout)) == len(rows)


@pytest.mark.slow
def test_transformers_judge_writes_critiques_and_revisions_cached(tmp_path, scripted_backend, qwen2_dir):
    """reviser: judge with judge.backend: transformers (a tiny random-weight Qwen2, its real chat template): the
    stage runs through it, and a forced re-run is served from the call cache."""
    project = make_tiny_project(tmp_path / "proj")
    args = ["--set", "critique.enabled=true", "--set", "critique.reviser=judge", "--set", "judge.backend=transformers",
            "--set", f"judge.model={qwen2_dir}", "--set", "critique.max_prompts=2", "--set", "critique.max_new_tokens=6"]
    cfg = str(project / "pipeline.yaml")
    assert main(["critique", cfg, *args]) == 0
    first = _info(project, "critique")
    assert first["writer"] == {"backend": "transformers", "model": str(qwen2_dir)} and first["calls"] > 2
    assert main(["critique", cfg, *args, "--force"]) == 0
    again = _info(project, "critique")
    assert again["calls"] == 0 and again["cache_hits"] == first["calls"] and again["output_hash"] == first["output_hash"]


def test_a_text_over_the_input_bound_counts_as_failed(monkeypatch):
    """A writer that ignores max_tokens (a hostile server) gave texts that sft.jsonl kept and sft then refused
    (RLAIF_MAX_TEXT_CHARS), with the answer cached so that a re-run repeated it: such a text counts as failed."""
    from rlaif.critique import Asker
    from rlaif.judges.llm import Completer, Completion

    monkeypatch.setenv("RLAIF_MAX_TEXT_CHARS", "50")

    class Writer(Completer):
        backend, model = "stub", "stub"

        def run(self, calls):
            return [Completion(text=c.messages[-1]["content"] * 20) for c in calls]

    asker = Asker(Writer(), None, 16, 4, None)
    out = asker.ask([[{"role": "user", "content": "ok"}], [{"role": "user", "content": "far too long"}]], "test")
    assert out == ["ok" * 20, None] and asker.failed == 1
