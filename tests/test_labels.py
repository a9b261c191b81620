"""`rlaif labels stats|export|import` on a hand-computed example."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from test_viewer import by_id, comps_of, make_run

from rlaif.cli import main
from rlaif.records import HumanLabel
from rlaif.viewer import verdicts as V
from rlaif.viewer.queue import open_run_store
from rlaif.vocab import import_name


@pytest.fixture
def labelled_run(tmp_path) -> Path:
    """The test_viewer run with: alice agrees on p1, flips p2 and p4, ties p6, agrees on the
    unscored p5; a labels file agrees on p3 and labels a comparison the judge never made."""
    d = make_run(tmp_path / "run")
    c = by_id(comps_of(d))
    with open_run_store(d) as s:
        for pid, verdict in (("p1", "agree"), ("p2", "flip"), ("p4", "flip"), ("p6", "tie"), ("p5", "agree")):
            V.verdict_write(c[pid], verdict, "alice", "looked twice" if pid == "p2" else None)(s)
        s.add_human_labels([
            HumanLabel(c["p3"].prompt, c["p3"].chosen, c["p3"].rejected, "chosen", "file:labels.jsonl:1"),
            HumanLabel("Unjudged prompt?", "good answer", "bad answer", "chosen", "file:labels.jsonl:2"),
        ])
    return d


def test_stats_match_the_hand_computed_figures(labelled_run, tmp_path, capsys):
    out = tmp_path / "stats.json"
    assert main(["labels", "stats", str(labelled_run), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    st = json.loads(out.read_text())
    assert st["human_labels"] == 7
    assert st["by_source"] == {"file:labels.jsonl": 2, "viewer:alice": 5}
    assert st["by_label"] == {"chosen": 6, "tie": 1}
    assert (st["on_ai_pairs"], st["on_unscored_ai_pairs"], st["not_on_ai_pairs"]) == (5, 1, 1)
    # Aggregate: p1 agree, p2 flip, p3 agree, p4 flip -> 2/4. In content order (A = the text that sorts
    # first) human = [A, B, B, B], AI = [A, A, B, A]: po 0.5, pe 1/4*3/4 + 3/4*1/4 = 0.375 -> kappa 0.2.
    o = st["overall"]
    assert (o["accuracy"], o["n"]) == (0.5, 4) and o["kappa"] == pytest.approx(0.2)
    assert o["ci95"][0] == pytest.approx(0.150, abs=1e-3) and o["ci95"][1] == pytest.approx(0.850, abs=1e-3)
    # helpful (p_chosen 0.8 everywhere) says what the aggregate says; concise prefers B on p4 (p 0.3),
    # as the human did: AI side [A, A, B, B] -> 3/4, pe 1/4*2/4 + 3/4*2/4 = 0.5 -> kappa 0.5.
    assert st["per_principle"]["helpful"]["accuracy"] == 0.5
    assert st["per_principle"]["concise"]["accuracy"] == 0.75
    assert st["per_principle"]["concise"]["kappa"] == pytest.approx(0.5)
    assert st["per_source"]["viewer:alice"]["accuracy"] == pytest.approx(1 / 3)
    f = st["per_source"]["file:labels.jsonl"]
    assert (f["accuracy"], f["n"]) == (1.0, 1)
    assert "viewer:alice" in printed and "principle concise" in printed and "0.750" in printed


@pytest.mark.parametrize("target", ["missing-folder", "a-folder"], ids=str)
def test_stats_json_to_a_missing_folder_or_a_folder(labelled_run, tmp_path, capsys, target):
    """`labels stats --json` into a folder that does not exist printed the tables and then a traceback
    (FileNotFoundError): the folder is made, as `labels export -o` does; a folder as the target is exit 2
    naming it, before the stats."""
    out = tmp_path / "nope" / "deeper" / "st.json" if target == "missing-folder" else tmp_path
    code = main(["labels", "stats", str(labelled_run), "--json", str(out)])
    captured = capsys.readouterr()
    if target == "missing-folder":
        assert code == 0 and json.loads(out.read_text())["human_labels"] == 7
        return
    assert code == 2 and str(out) in captured.err and "\n" not in captured.err.strip()
    assert "AI-human agreement" not in captured.out


def _labels(run: Path) -> set[tuple]:
    db = sqlite3.connect(run / "store.sqlite")
    rows = set(db.execute("SELECT prompt, chosen, rejected, label, annotator, note FROM human_labels"))
    db.close()
    return rows


@pytest.mark.parametrize("fmt", ["jsonl", "trl", "parquet"])
def test_export_import_round_trip(labelled_run, tmp_path, capsys, fmt):
    out = tmp_path / f"human.{fmt if fmt != 'trl' else 'jsonl'}"
    assert main(["labels", "export", str(labelled_run), "--source", "human", "--format", fmt, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    fresh = make_run(tmp_path / "fresh")
    assert main(["labels", "import", str(out), str(fresh)]) == 0
    assert "imported" in capsys.readouterr().out
    # alice's label on p5 has an empty answer: label files need text, so export leaves it out
    original = {r for r in _labels(labelled_run) if r[1] and r[2]}
    assert len(original) == 6 and "1 empty text" in printed
    if fmt == "trl":  # preferences only, nothing but prompt/chosen/rejected
        assert "1 tie, both-bad or unscored" in printed
        assert _labels(fresh) == {(p, c, r, lab, None, None) for p, c, r, lab, _, _ in original if lab == "chosen"}
    else:
        assert _labels(fresh) == original
    db = sqlite3.connect(fresh / "store.sqlite")
    sources = sorted(r[0] for r in db.execute("SELECT source FROM human_labels"))
    db.close()
    n = 5 if fmt == "trl" else 6
    assert sources == sorted(f"import:{import_name(out)}:{i}" for i in range(1, n + 1))
    assert main(["labels", "import", str(out), str(fresh)]) == 0  # again: replaces, does not duplicate
    assert len(_labels(fresh)) == n


def test_export_ai_and_all(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    trl = tmp_path / "ai.jsonl"
    assert main(["labels", "export", str(run), "--source", "ai", "--format", "trl", "-o", str(trl)]) == 0
    rows = [json.loads(x) for x in trl.read_text().splitlines()]
    assert len(rows) == 5  # not p5 (empty)
    assert all(set(r) == {"prompt", "chosen", "rejected", "rlaif_source"} and r["rlaif_source"] == "ai" for r in rows)
    c = by_id(comps_of(run))
    with open_run_store(run) as s:
        V.verdict_write(c["p1"], "flip", "bob")(s)
    full = tmp_path / "all.jsonl"
    assert main(["labels", "export", str(run), "--source", "all", "-o", str(full)]) == 0
    rows = [json.loads(x) for x in full.read_text().splitlines()]
    kinds = sorted(r["kind"] for r in rows)
    assert kinds == ["ai"] * 4 + ["human"]  # p1's AI pair gives way to bob's label; p5 has an empty answer
    assert "left out: 1 empty text" in capsys.readouterr().out
    assert [r["chosen"] for r in rows if r["kind"] == "human"] == [c["p1"].rejected]
    assert main(["labels", "import", str(full), str(run)]) == 2  # AI records are not human labels
    assert "an AI label" in capsys.readouterr().err


def test_import_ab_file_keeps_ties(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    f = tmp_path / "ab.jsonl"
    f.write_text(json.dumps({"prompt": "q", "response_a": "x", "response_b": "y", "label": "B"}) + "\n"
                 + json.dumps({"prompt": "q2", "response_a": "x", "response_b": "y", "label": "tie"}) + "\n")
    assert main(["labels", "import", str(f), str(run)]) == 0
    assert _labels(run) == {("q", "y", "x", "chosen", None, None), ("q2", "x", "y", "tie", None, None)}


@pytest.mark.parametrize("child", [False, True], ids=["in-process", "child-process"])
def test_import_into_a_run_with_a_system_prompt_adds_it(tmp_path, capsys, monkeypatch, child):
    """A run made with data.system_prompt stores every prompt with it; imported labels and feedback get it too
    (without it they never met the run's AI pairs, and trained without the system message)."""
    from rlaif import labels_reader
    from rlaif.chat import with_system

    monkeypatch.setattr(labels_reader, "IN_PROCESS_BYTES", 0 if child else 10**12)
    run = make_run(tmp_path / "run")
    (run / "manifest.json").write_text(json.dumps({"config": {"data": {"system_prompt": "Be kind."}}}))
    f = tmp_path / "mixed.jsonl"
    f.write_text(json.dumps({"prompt": "q", "chosen": "x", "rejected": "y"}) + "\n"
                 + json.dumps({"prompt": [{"role": "system", "content": "Own."}, {"role": "user", "content": "q3"}],
                               "chosen": "a", "rejected": "b"}) + "\n"
                 + json.dumps({"prompt": "q2", "completion": "z", "label": True}) + "\n")
    assert main(["labels", "import", str(f), str(run)]) == 0
    db = sqlite3.connect(run / "store.sqlite")
    prompts = {p for (p,) in db.execute("SELECT prompt FROM human_labels WHERE source LIKE 'import%'")}
    own = json.dumps([{"role": "system", "content": "Own."}, {"role": "user", "content": "q3"}], ensure_ascii=False)
    assert prompts == {with_system("q", "Be kind."), own}  # a conversation with its own system message keeps it
    assert [p for (p,) in db.execute("SELECT prompt FROM human_feedback")] == [with_system("q2", "Be kind.")]


@pytest.mark.parametrize("child", [False, True], ids=["in-process", "child-process"])
def test_a_bad_record_deep_in_a_large_import_rolls_the_whole_import_back(tmp_path, capsys, monkeypatch, child):
    """Also with the file read ahead in a child process (rlaif/labels_reader.py; large files): the same one-line
    error naming the record, nothing kept."""
    from rlaif import labels_reader

    monkeypatch.setattr(labels_reader, "IN_PROCESS_BYTES", 0 if child else 10**12)
    run = make_run(tmp_path / "run")
    f = tmp_path / "many.jsonl"
    with open(f, "w") as fh:  # past the first chunk that is read before the store opens
        for i in range(12_000):
            fh.write(json.dumps({"prompt": f"q{i}", "chosen": "yes", "rejected": "no"}) + "\n")
        fh.write(json.dumps({"prompt": "q", "chosen": "", "rejected": "no"}) + "\n")
    assert main(["labels", "import", str(f), str(run)]) == 2
    err = capsys.readouterr().err
    assert "many.jsonl:12001" in err and err.count("\n") == 1, err
    with open_run_store(run) as s:
        assert s.human_label_count() == 0
    f.write_text("".join(f.read_text().splitlines(keepends=True)[:-1]))
    assert main(["labels", "import", str(f), str(run)]) == 0
    with open_run_store(run) as s:
        assert s.human_label_count() == 12_000


def test_the_child_process_reader_gives_what_the_in_process_reader_gives(tmp_path, monkeypatch):
    """Labels (with their keys), order and feedback of a mixed file, read ahead in a child process in batches."""
    from rlaif import labels_reader
    from rlaif.labels import iter_labels

    f = tmp_path / "mixed.jsonl"
    with open(f, "w") as fh:
        for i in range(5_003):
            fh.write(json.dumps({"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": "no", "annotator": "ann"}) + "\n")
            if i % 1000 == 0:
                fh.write(json.dumps({"prompt": f"q{i}", "completion": "fine", "label": i % 2 == 0}) + "\n")
                fh.write(json.dumps({"prompt": f"q{i}", "response_a": "a", "response_b": "b", "label": "tie"}) + "\n")
    monkeypatch.setattr(labels_reader, "IN_PROCESS_BYTES", 0)
    monkeypatch.setattr(labels_reader, "BATCH", 333)
    fb_child, fb_here = [], []
    child = list(labels_reader.read_labels_file(f, True, fb_child))
    here = list(iter_labels(f, True, fb_here))
    assert child == here and len(here) == 5_009
    assert [h.key for h in child] == [h.key for h in here] and [h.source for h in child] == [h.source for h in here]
    assert fb_child == fb_here and len(fb_here) == 6


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process tree from Linux's /proc")
def test_the_child_reader_stops_when_its_parent_dies(tmp_path):
    """The forked reader holds no copy of the pipe's read end: when the importing process is killed (SIGKILL, a
    closed terminal) the child's next send fails and it exits, instead of waiting on the pipe for ever."""
    import os
    import signal
    import subprocess
    import sys
    import time

    f = tmp_path / "big.jsonl"
    with open(f, "w") as fh:
        for i in range(60_000):
            fh.write(json.dumps({"prompt": f"q{i}", "chosen": "yes " * 20, "rejected": "no"}) + "\n")
    code = ("import sys, time\nfrom rlaif import labels_reader\nit = labels_reader.read_labels_file(sys.argv[1])\n"
            "next(it)\nprint('reading', flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code, str(f)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert parent.stdout.readline().strip() == "reading"
    children = [int(p) for p in Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()]
    assert children
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(Path(f"/proc/{c}").exists() and
                                         "Z" not in Path(f"/proc/{c}/stat").read_text().split()[2] for c in children):
        time.sleep(0.2)
    assert not any(Path(f"/proc/{c}").exists() and "Z" not in Path(f"/proc/{c}/stat").read_text().split()[2]
                   for c in children)
