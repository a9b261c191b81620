"""Label provenance: AI labels cannot be imported as human ones, imported labels stay out of the
held-out eval split unless the user says they are human, and an export never replaces a
non-regular file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from test_viewer import make_run

from rlaif.cli import main
from rlaif.config import MixConfig
from rlaif.mixing import mix
from rlaif.records import HumanLabel
from rlaif.vocab import import_name, import_prefix


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _write_in(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir()
    return _write(folder / "rank.jsonl", rows)


def _human_count(run: Path) -> int:
    import sqlite3

    with sqlite3.connect(run / "store.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM human_labels").fetchone()[0]


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "run")


EDITS = {
    "trl-export": lambda r: r,
    "kind-AI": lambda r: {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], "kind": "AI"},
    "kind-spaced": lambda r: {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
                              "kind": " Ai "},
    "rlaif_source-AI": lambda r: {**r, "rlaif_source": "AI"},
    "source-ai-prefix": lambda r: {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
                                   "source": "ai:openai"},
}


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_ai_labels_are_refused_on_import(run, tmp_path, capsys, edit):
    trl = tmp_path / "ai.jsonl"
    assert main(["labels", "export", str(run), "--source", "ai", "--format", "trl", "-o", str(trl)]) == 0
    rows = _rows(trl)
    assert rows and all(r["rlaif_source"] == "ai" for r in rows)
    edited = _write(tmp_path / "edited.jsonl", [EDITS[edit](r) for r in rows])
    before = _human_count(run)
    capsys.readouterr()
    assert main(["labels", "import", str(edited), str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "an AI label" in err and "edited.jsonl:1" in err
    assert _human_count(run) == before  # nothing written


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_ai_export_in_every_format_is_refused(run, tmp_path, fmt):
    out = tmp_path / f"ai.{fmt}"
    assert main(["labels", "export", str(run), "--source", "ai", "--format", fmt, "-o", str(out)]) == 0
    assert main(["labels", "import", str(out), str(run)]) == 2


def test_human_trl_export_round_trips(run, tmp_path):
    from test_viewer import by_id, comps_of

    from rlaif.viewer import verdicts as V
    from rlaif.viewer.queue import open_run_store

    c = by_id(comps_of(run))
    with open_run_store(run) as s:
        V.verdict_write(c["p1"], "flip", "bob")(s)
    trl = tmp_path / "human.jsonl"
    assert main(["labels", "export", str(run), "--source", "human", "--format", "trl", "-o", str(trl)]) == 0
    assert [r["rlaif_source"] for r in _rows(trl)] == ["human"]
    assert main(["labels", "import", str(trl), str(run)]) == 0


@pytest.mark.parametrize("flag,prefix", [([], "import:"), (["--human"], "import-human:")], ids=["default", "human"])
def test_import_records_its_source(run, tmp_path, flag, prefix):
    f = _write(tmp_path / "mine.jsonl", [{"prompt": "q", "chosen": "good", "rejected": "bad"}])
    assert main(["labels", "import", str(f), str(run), *flag]) == 0
    import sqlite3

    with sqlite3.connect(run / "store.sqlite") as db:
        sources = [r[0] for r in db.execute("SELECT source FROM human_labels WHERE prompt = 'q'")]
    assert sources == [f"{prefix}{import_name(f)}:1"] and sources[0].startswith(f"{prefix}mine.jsonl@")


def test_importing_a_file_again_with_the_other_flag_replaces_it(run, tmp_path, capsys):
    """README: importing the same file again replaces its labels instead of adding copies. With --human the
    second time (or without it), every label and feedback was stored again under the other source, counted
    twice by `labels stats` ("2 human labels in the run")."""
    import sqlite3

    f = _write(tmp_path / "mine.jsonl", [{"prompt": "q", "chosen": "good", "rejected": "bad"},
                                          {"prompt": "q", "completion": "good", "label": True}])
    (tmp_path / "other").mkdir()
    other = _write(tmp_path / "other" / "mine.jsonl", [{"prompt": "q", "chosen": "fine", "rejected": "bad"}])
    assert main(["labels", "import", str(other), str(run), "--human"]) == 0  # same name, another label: kept
    for flag in ([], ["--human"], [], ["--human"]):
        assert main(["labels", "import", str(f), str(run), *flag]) == 0
    assert "(2 human labels in the run;" in capsys.readouterr().out.splitlines()[-1]
    with sqlite3.connect(run / "store.sqlite") as db:
        labels = sorted(db.execute("SELECT chosen, source FROM human_labels WHERE prompt = 'q'"))
        feedback = [r[0] for r in db.execute("SELECT source FROM human_feedback")]
    assert labels == [("fine", f"import-human:{import_name(other)}:1"), ("good", f"import-human:{import_name(f)}:1")]
    assert feedback == [f"import-human:{import_name(f)}:2"]


def _labels(source: str, n: int = 40) -> list[HumanLabel]:
    return [HumanLabel(f"q{i}", f"good {i}", f"bad {i}", "chosen", f"{source}:{i}") for i in range(n)]


@pytest.mark.parametrize("source,may_eval", [("import:x.jsonl", False), ("import-human:x.jsonl", True),
                                             ("file:labels.jsonl", True), ("viewer:alice", True)],
                         ids=["import", "import-human", "file", "viewer"])
def test_imported_labels_stay_out_of_the_held_out_split(source, may_eval):
    splits, stats = mix([], _labels(source), MixConfig(human_eval_fraction=0.5), seed=0)
    assert len(splits["train"]) + len(splits["eval"]) == 40
    if may_eval:
        assert 5 < len(splits["eval"]) < 35 and stats["eval_source"] == "human"
    else:
        assert splits["eval"] == [] and stats["human_train_pairs"] == 40



# ---------------------------------------------------------------- export targets
def _targets(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    ro = tmp_path / "ro.jsonl"
    ro.write_text("keep\n")
    ro.chmod(stat.S_IRUSR)
    return {"dev-full": Path("/dev/full"), "dev-null": Path("/dev/null"), "fifo": fifo, "dir": tmp_path,
            "read-only-file": ro}


@pytest.mark.parametrize("target", ["dev-full", "dev-null", "fifo", "dir", "read-only-file"])
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_refuses_targets_that_are_not_writable_regular_files(run, tmp_path, capsys, target, fmt):
    if target == "read-only-file" and os.geteuid() == 0:
        pytest.skip("root writes read-only files")
    path = _targets(tmp_path)[target]
    before = path.lstat()
    assert main(["labels", "export", str(run), "--source", "ai", "--format", fmt, "-o", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err
    after = path.lstat()
    assert (stat.S_IFMT(after.st_mode), after.st_ino) == (stat.S_IFMT(before.st_mode), before.st_ino)
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_replaces_a_regular_file_whole(run, tmp_path):
    out = tmp_path / "ai.jsonl"
    out.write_text("old\n")
    assert main(["labels", "export", str(run), "--source", "ai", "-o", str(out)]) == 0
    assert all(r["kind"] == "ai" for r in _rows(out))
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_ai_labels_are_refused_in_a_labels_file(run, tmp_path, edit):
    """The same rule for `mix.human_labels` files: an AI export renamed into the config is not human."""
    from rlaif.errors import RlaifError
    from rlaif.records import load_human_labels

    trl = tmp_path / "ai.jsonl"
    assert main(["labels", "export", str(run), "--source", "ai", "--format", "trl", "-o", str(trl)]) == 0
    edited = _write(tmp_path / "edited.jsonl", [EDITS[edit](r) for r in _rows(trl)])
    with pytest.raises(RlaifError, match=r"edited\.jsonl:1: an AI label"):
        load_human_labels(edited)


def test_rankings_from_two_files_of_the_same_name_stay_two_groups(run, tmp_path, capsys):
    """Two folders each hold a `rank.jsonl` whose line 1 ranks answers to the same prompt. Both imports gave
    their feedback the source `import:rank.jsonl:1`, so the two rankings became one group: the mix paired
    a's best against b's worst, an order no one gave, and an answer ranked in both files kept one rank only
    (UNIQUE(feedback_key, source)). Each import now names its own file; importing one file again still
    replaces what it stored."""
    import sqlite3

    from rlaif.config import FeedbackConfig
    from rlaif.feedback import feedback_pairs
    from rlaif.store import Store

    files = []
    for folder, ranked in (("a", ["a1", "shared", "a3"]), ("b", ["shared", "b2", "b3"])):
        (tmp_path / folder).mkdir()
        files.append(_write(tmp_path / folder / "rank.jsonl",
                            [{"prompt": "same q", "completions": ranked, "ranking": [1, 2, 3]}]))
    for f in (*files, files[0]):  # the first again: replaces its own, leaves the other's
        assert main(["labels", "import", str(f), str(run)]) == 0
    with Store(run / "store.sqlite") as s:
        fb = s.feedback()
    assert len(fb) == 6 and len({f.source for f in fb}) == 2
    assert {f.source.startswith("import:rank.jsonl") for f in fb} == {True}  # the file's name still shows
    pairs, stats = feedback_pairs(fb, FeedbackConfig())
    made = {(p.chosen, p.rejected) for p in pairs}
    assert made == {("a1", "shared"), ("a1", "a3"), ("shared", "a3"), ("shared", "b2"), ("shared", "b3"),
                    ("b2", "b3")}
    with sqlite3.connect(run / "store.sqlite") as db:  # the run's labels and feedback, nothing else
        assert db.execute("SELECT COUNT(*) FROM human_feedback").fetchone()[0] == 6


@pytest.mark.parametrize("old_human", [False, True], ids=["old-import", "old-import-human"])
def test_importing_a_file_again_into_a_run_that_stored_its_bare_name_replaces_those_records(run, tmp_path,
                                                                                              old_human):
    """A run from before import_name stored `import:mine.jsonl:LINE`; importing the file again replaces those
    records (the same key on the same line) instead of adding copies; other records of that source stay."""
    import sqlite3

    from rlaif.records import Feedback
    from rlaif.store import Store
    from rlaif.vocab import import_source

    f = _write(tmp_path / "mine.jsonl", [{"prompt": "q", "chosen": "good", "rejected": "bad"},
                                          {"prompt": "q", "completion": "good", "label": True}])
    with Store(run / "store.sqlite") as s:  # what the earlier rlaif stored
        s.add_human_labels([HumanLabel("q", "good", "bad", source=import_source("mine.jsonl", 1, old_human)),
                            HumanLabel("q2", "kept", "bad", source=import_source("mine.jsonl", 2, old_human))])
        s.add_feedback([Feedback("q", "good", "thumbs", 1, 2, import_source("mine.jsonl", 2, old_human))])
    assert main(["labels", "import", str(f), str(run)]) == 0
    with sqlite3.connect(run / "store.sqlite") as db:
        labels = sorted(db.execute("SELECT chosen, source FROM human_labels WHERE prompt LIKE 'q%'"))
        feedback = [r[0] for r in db.execute("SELECT source FROM human_feedback")]
    assert labels == [("good", f"import:{import_name(f)}:1"), ("kept", import_source("mine.jsonl", 2, old_human))]
    assert feedback == [f"import:{import_name(f)}:2"]


@pytest.mark.parametrize("human", [(False, False), (False, True), (True, False)],
                         ids=["import-both-times", "then-human", "human-then-plain"])
def test_a_moved_file_imported_again_replaces_what_it_stored_from_its_old_path(run, tmp_path, human):
    """Sources name the path (import_name), so a file moved (or given through another folder) and imported again
    added a second copy of every record: the run's count doubled, the thumbs went into KTO twice and `labels
    stats` listed the file twice. A group stored from another path of the same file name is now replaced when
    the new import stores the same comparisons or responses on its line, as an import of the same path is."""
    import shutil
    import sqlite3

    rows = [{"prompt": "q", "chosen": "good", "rejected": "bad"},
            {"prompt": "q", "completion": "good", "label": True},
            {"prompt": "r", "completions": ["x", "y", "z"], "ranking": [2, 1, 3]}]
    f = _write_in(tmp_path / "a", rows)
    assert main(["labels", "import", str(f), str(run)] + ["--human"] * human[0]) == 0
    moved = tmp_path / "b" / "rank.jsonl"
    moved.parent.mkdir()
    shutil.move(f, moved)
    assert main(["labels", "import", str(moved), str(run)] + ["--human"] * human[1]) == 0
    prefix = import_prefix(import_name(moved), human[1])
    with sqlite3.connect(run / "store.sqlite") as db:
        labels = [r[0] for r in db.execute("SELECT source FROM human_labels")]
        feedback = sorted(r[0] for r in db.execute("SELECT source FROM human_feedback"))
    assert labels == [prefix + "1"] and feedback == [prefix + "2"] + [prefix + "3"] * 3


def test_a_same_named_file_elsewhere_keeps_its_groups_unless_its_line_holds_the_same_records(run, tmp_path):
    """Another file of the same name is not a copy: its groups stay, except one whose line holds the same
    comparison or the same responses as the new file's line (those are replaced, as on a re-import)."""
    import sqlite3

    a = [{"prompt": "q", "chosen": "good", "rejected": "bad"},  # the same comparison as b's line 1: a copy
         {"prompt": "r", "completions": ["x", "y"], "ranking": [1, 2]},  # b ranks x against w: its own
         {"prompt": "s", "completion": "fine", "label": True}]  # b's line 3 is another response
    b = [a[0], {"prompt": "r", "completions": ["x", "w"], "ranking": [1, 2]},
         {"prompt": "s", "completion": "other", "label": False}]
    fa, fb = _write_in(tmp_path / "a", a), _write_in(tmp_path / "b", b)
    for path in (fa, fb):
        assert main(["labels", "import", str(path), str(run)]) == 0
    pa, pb = (import_prefix(import_name(p)) for p in (fa, fb))
    with sqlite3.connect(run / "store.sqlite") as db:
        labels = sorted(r[0] for r in db.execute("SELECT source FROM human_labels"))
        feedback = sorted(r[0] for r in db.execute("SELECT source FROM human_feedback"))
    assert labels == [pb + "1"]
    assert feedback == sorted([pa + "2"] * 2 + [pa + "3"] + [pb + "2"] * 2 + [pb + "3"])
